"""Load CMU-MOSEI (Zadeh et al., 2018) from the SDK's computational sequences, through the CMU-MOSI loader.

CMU-MOSEI's SDK files have CMU-MOSI's layout (one entry per video; words, COVAREP and FACET frames
with intervals; one label row per opinion segment), so the samples, alignment, cache, data report
and ``on_error`` policy are :func:`mmsenti.data.mosi.load_mosi_csd`'s; what differs is named here:

* file names (:data:`DEFAULT_FILES`, first found wins): ``CMU_MOSEI_TimestampedWords.csd``,
  ``CMU_MOSEI_COVAREP.csd`` (74-d, 100 Hz), ``CMU_MOSEI_VisualFacet42.csd`` (FACET 4.2, 35-d) and the
  label file ``CMU_MOSEI_Labels.csd`` (the upstream SDK's ``All Labels``) or the older
  ``CMU_MOSEI_LabelsSentiment.csd``; ``mmsenti data download mosei`` fetches the first set;
* the label file holds 7 values per segment, :data:`LABEL_COLUMNS`: sentiment in [-3, 3] at index
  0 (the label every metric uses, as for CMU-MOSI), then six emotion intensities in [0, 3], which
  are recorded in the report (``label_columns``) but not used;
* the folds: ``folds=`` > ``<root>/folds.json`` > the SDK's standard CMU-MOSEI folds (2,250 / 300 /
  678 videos, :func:`mmsenti.data.folds.sdk_standard_folds` with ``dataset="mosei"``). A few standard
  fold ids are known to be absent from some releases of the feature files: load with
  ``on_error="skip"`` to count them instead of raising.

Sample ids are ``<video_id>$_$<row + 1>`` as for CMU-MOSI (:mod:`mmsenti.data.ids`); MMSA's MOSEI
``label.csv`` numbering has not been checked against it here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Mapping

from .align import EPS, Collapse
from .csd import CSDError, CSDReader
from .folds import assign_folds, resolve_folds
from .mosi import MosiData, load_mosi_csd

__all__ = ["DEFAULT_DIMS", "DEFAULT_FILES", "LABEL_COLUMNS", "load_mosei_csd", "mosei_files"]

#: Candidate file names per input, first found wins.
DEFAULT_FILES: dict[str, tuple[str, ...]] = {
    "words": ("CMU_MOSEI_TimestampedWords.csd",),
    "audio": ("CMU_MOSEI_COVAREP.csd",),
    "vision": ("CMU_MOSEI_VisualFacet42.csd", "CMU_MOSEI_VisualFacet_4.2.csd"),
    "labels": ("CMU_MOSEI_Labels.csd", "CMU_MOSEI_LabelsSentiment.csd"),
}
#: COVAREP and FACET 4.2 widths (the vision width stands when the file is absent).
DEFAULT_DIMS = {"audio": 74, "vision": 35}
#: The 7 values of a ``CMU_MOSEI_Labels.csd`` row; sentiment (index 0) is the label.
LABEL_COLUMNS = ("sentiment", "happiness", "sadness", "anger", "surprise", "disgust", "fear")
DOWNLOAD_HINT = "fetch it with `mmsenti data download mosei --features labels` (see docs/datasets.md)"


def mosei_files(root: str | os.PathLike,
                files: Mapping[str, str | os.PathLike | None] | None = None) -> dict[str, str | None]:
    """Absolute path per input (``None``: that modality is absent) for :func:`load_mosi_csd`'s ``files=``.

    ``files`` names files under other names (relative to ``root`` or absolute; ``None`` disables a
    modality). A missing label file, or a named file that is not there, is a :class:`CSDError`
    naming the ``.csd`` files the folder holds.
    """
    root = Path(root)
    files = dict(files or {})
    unknown = set(files) - set(DEFAULT_FILES)
    if unknown:
        raise ValueError(f"files= has unknown keys {sorted(unknown)}; expected {sorted(DEFAULT_FILES)}")
    have = sorted(p.name for p in root.glob("*.csd")) if root.is_dir() else []
    listing = f".csd files in {root}: {', '.join(have)}" if have else f"no .csd files in {root}"
    out: dict[str, str | None] = {}
    for key, names in DEFAULT_FILES.items():
        if key in files and files[key] is not None:
            path = Path(files[key]) if Path(files[key]).is_absolute() else root / files[key]
            if not path.is_file():
                raise CSDError(path, f"file not found (named as the CMU-MOSEI {key} file, data.files.{key})",
                               hint=f"{listing}; fix data.files.{key}")
            out[key] = str(path)
        elif key in files:
            out[key] = None
        else:
            found = [root / n for n in names if (root / n).is_file()]
            out[key] = str(found[0]) if found else None
    if out["labels"] is None:
        raise CSDError(root / DEFAULT_FILES["labels"][0], "CMU-MOSEI label file not found",
                       hint=f"{listing}; name yours with data.files.labels=<file>, or {DOWNLOAD_HINT}")
    return out


def load_mosei_csd(
    root: str | os.PathLike,
    mode: Literal["aligned", "unaligned"] = "aligned",
    folds: Mapping[str, list[str]] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    max_frames: int | None = None,
    collapse: Collapse = "mean",
    cache_dir: str | os.PathLike | Literal[False] | None = None,
    files: Mapping[str, str | os.PathLike | None] | None = None,
    eps: float = EPS,
) -> MosiData:
    """Load CMU-MOSEI computational sequences from ``root`` into train/valid/test sample lists.

    Arguments as for :func:`~mmsenti.data.mosi.load_mosi_csd` (same samples, report, cache); the
    folds default to ``<root>/folds.json``, else the SDK's standard CMU-MOSEI folds. The report adds
    ``dataset`` and ``label_columns`` (the label file's value names, sentiment first).
    """
    root = Path(root)
    paths = mosei_files(root, files)
    resolved = resolve_folds(root, folds, dataset="mosei")
    with CSDReader(paths["labels"]) as reader:
        width = reader.feature_dim or 1
        assign_folds(resolved, reader.videos, on_error=on_error)  # an error names the folds' real source
    data = load_mosi_csd(root, mode=mode, folds=resolved.folds, on_error=on_error, max_frames=max_frames,
                         collapse=collapse, cache_dir=cache_dir, files=paths, eps=eps)
    if paths["vision"] is None:
        data.vision_dim = DEFAULT_DIMS["vision"]
    data.report["dataset"] = "CMU-MOSEI"
    data.report["folds_source"] = resolved.source
    data.report["label_columns"] = list(LABEL_COLUMNS[:width]) if width <= len(LABEL_COLUMNS) else \
        ["sentiment", *(f"value_{i}" for i in range(1, width))]
    return data
