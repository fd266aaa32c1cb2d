"""One sample-id convention for every source: MMSA's ``<video_id>$_$<clip_id>``.

Every loader (CSD folders, MMSA pickles, ``label.csv``, extracted features, the synthetic set)
names a sample this way, so predictions made from different formats of the same data join on
``id``. CMU-MOSI's clip ids count a video's opinion segments from 1 in label-file order: the SDK's
segment ``2WGyTLYerpo[43]`` (row 43 of the video's label entry) is MMSA's ``2WGyTLYerpo$_$44``
(checked on the official label file against MMSA-FET's ``label.csv``: all 1,513 train/valid rows agree).
"""

from __future__ import annotations

__all__ = ["SEPARATOR", "csd_segment_id", "sample_id", "video_of"]

SEPARATOR = "$_$"


def sample_id(video_id: str, clip_id: str | int) -> str:
    """MMSA's id of one clip (segment): ``f"{video_id}$_${clip_id}"``."""
    return f"{video_id}{SEPARATOR}{clip_id}"


def csd_segment_id(entry: str, row: int, rows: int) -> str:
    """The id of row ``row`` (0-based) of label-file entry ``entry`` holding ``rows`` segments.

    A CMU-SDK entry is a video: its rows are clips ``1, 2, ...``. An entry that already is a clip
    (``mmsenti extract`` writes one entry ``<video_id>$_$<clip_id>`` per clip, one row each) keeps its name.
    """
    if SEPARATOR in entry and rows == 1:
        return entry
    return sample_id(entry, row + 1)


def video_of(sample: str) -> str:
    """The video a sample id belongs to (folds are by video): the part before ``$_$``."""
    return sample.split(SEPARATOR, 1)[0]
