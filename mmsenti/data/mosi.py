"""Load CMU-MOSI from SDK computational sequences into per-split lists of sample dicts.

Why a loader of our own: the SDK's two-stage alignment (words, then labels) takes ~30 s and
1.2 GB for CMU-MOSI, silently drops words without frames, keeps NaN/-inf, and needs extra code to
reach the sample layout our models consume. Here every video is processed with a few vectorised
calls (:mod:`mmsenti.data.align`, same overlap rule as the SDK), every data problem is either a
clear error or a counted entry in ``MosiData.report`` (never silent), and the result is cached
as one ``.npz`` (concatenated arrays + offsets, no pickle; :mod:`mmsenti.data.mosi_cache`) so the
second load takes a fraction of a second.

Samples follow the contract in :mod:`mmsenti.data.batch`::

    {"id": "<video_id>$_$<clip>",  # MMSA's id (mmsenti.data.ids): clip = segment row + 1; SDK key <video_id>[row]
     "text": words of the segment joined by spaces, "sp" silence tokens dropped (None: no words),
     "audio": float32 [T, 74] or None, "vision": float32 [T, 47] or None,
     "label": float sentiment in [-3, 3]}

Modes:

* ``"aligned"`` - one row per (non-"sp") word of the segment: frame features averaged (or
  ``collapse``) over the word's interval, MulT/MMSA "aligned" style; ``len(text.split()) == T``.
  A word no frame overlaps gets a zero row and is counted in ``report["words_without_frames"]``.
* ``"unaligned"`` - the frames overlapping the segment at the modality's own rate, evenly
  subsampled to ``max_frames`` rows when given.

A word or frame belongs to a segment when it overlaps it by more than ``eps`` (1e-3 s, the SDK's rule).

Data problems and the ``on_error`` policy (``"raise"`` default, or ``"skip"`` = drop and count):

* malformed entries in any file (features/intervals length mismatch, zero rows, an interval that
  ends before it starts): raise :class:`~mmsenti.data.csd.CSDError`, or skip the entry - for the
  label file its video's segments are skipped, for words/audio/vision that modality becomes ``None``;
* fold video ids absent from the label file: :class:`~mmsenti.data.folds.FoldError`, or counted;
* non-finite labels: :class:`MosiDataError`, or the segment is skipped.

Always counted, never an error: NaN/+-inf feature values (replaced by 0), a missing modality
file or a video absent from a modality file (that modality is ``None`` for those samples), words
or segments no frame overlaps, zero-length segments (the official label file has one,
``2WGyTLYerpo[43]``: kept, with no words and no frames). What was dropped is also counted per split
(``report["dropped"]``, ``report["modality_dropped"]``) for the console warning the datamodule prints.

Always an error: a missing label file or a file named in ``files=`` that is not there
(:class:`~mmsenti.data.csd.CSDError`, listing the ``.csd`` files the folder does hold), a words file
whose features are numbers rather than words (:class:`MosiDataError`).
"""

from __future__ import annotations

import logging
import os
import time
import zipfile
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np

from mmsenti.errors import MmsentiError

from .align import EPS, Collapse, collapse_frames, overlap_pairs, sort_by_start, subsample_frames
from .csd import ComputationalSequence, CSDError, CSDReader, decode_words, read_csd
from .folds import SPLITS, assign_folds, resolve_folds
from .ids import csd_segment_id
from .mosi_cache import CACHE_VERSION, cache_key, default_cache_dir, file_stamp, load_cache, save_cache

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_FILES", "MosiData", "MosiDataError", "load_mosi_csd"]

#: Candidate file names per input, first found wins (FACET has carried several names in SDK releases).
DEFAULT_FILES: dict[str, tuple[str, ...]] = {
    "words": ("CMU_MOSI_TimestampedWords.csd",),
    "audio": ("CMU_MOSI_COVAREP.csd",),
    "vision": ("CMU_MOSI_Visual_Facet_41.csd", "CMU_MOSI_Visual_Facet_42.csd", "CMU_MOSI_VisualFacet_4.1.csd"),
    "labels": ("CMU_MOSI_Opinion_Labels.csd",),
}
#: Feature widths of COVAREP and FACET 4.1, used when a modality file is absent.
DEFAULT_DIMS = {"audio": 74, "vision": 47}
MODALITIES = ("audio", "vision")
SILENCE = "sp"

Mode = Literal["aligned", "unaligned"]
OnError = Literal["raise", "skip"]


class MosiDataError(MmsentiError):
    """The CMU-MOSI inputs cannot be turned into samples (message says why and what to do)."""


@dataclass
class MosiData:
    """Samples per split plus feature widths and a report of everything that was counted.

    ``report`` (JSON-serialisable) holds: ``segments`` / ``videos`` per split; ``nonfinite_replaced``
    (per modality: nan / posinf / neginf values set to 0); ``missing_modality`` (segments whose
    text/audio/vision is ``None``); ``missing_files``; ``videos_missing_from`` (per file);
    ``words_without_frames`` (aligned: word rows left at zero); ``segments_without_frames``
    (unaligned); ``segments_without_words``; ``subsampled_segments``; ``skipped`` (``videos`` /
    ``segments`` / ``modality_entries`` by reason); ``invalid_entries`` (file -> video -> reason);
    ``unknown_fold_ids`` and examples; ``videos_not_in_folds``; ``folds_source``; ``cache``
    (``hit``, ``path``, ``key``, or ``error``) and ``seconds``; ``zero_length_segments`` (kept)
    and examples; ``dropped`` (split -> reason -> segments left out of that split, or whole videos
    where the reason says so) and ``modality_dropped`` (split -> reason -> segments kept without
    that modality); ``unused_files`` (``.csd`` files in ``root`` that no input was read from).
    """

    splits: dict[str, list[dict]]
    audio_dim: int
    vision_dim: int
    report: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(v) for v in self.splits.values())

    @property
    def from_cache(self) -> bool:
        return bool(self.report.get("cache", {}).get("hit"))


# ----------------------------------------------------------------------------------------------
# public entry point


def load_mosi_csd(
    root: str | os.PathLike,
    mode: Mode = "aligned",
    folds: Mapping[str, list[str]] | None = None,
    on_error: OnError = "raise",
    max_frames: int | None = None,
    collapse: Collapse = "mean",
    cache_dir: str | os.PathLike | Literal[False] | None = None,
    files: Mapping[str, str | os.PathLike | None] | None = None,
    eps: float = EPS,
) -> MosiData:
    """Load CMU-MOSI computational sequences from ``root`` into train/valid/test sample lists.

    Args:
        root: folder with the ``.csd`` files (SDK names, see :data:`DEFAULT_FILES`).
        mode: ``"aligned"`` (one row per word) or ``"unaligned"`` (frames at native rate).
        folds: explicit ``{"train": [...], "valid": [...], "test": [...]}``; else
            ``<root>/folds.json``; else the SDK's standard folds.
        on_error: ``"raise"`` or ``"skip"`` (drop and count) for malformed data, see module doc.
        max_frames: unaligned mode only: evenly subsample each segment to at most this many rows.
        collapse: aligned mode only: ``"mean"`` (SDK ``avg``), ``"max"`` or ``"first"``.
        cache_dir: where the processed ``.npz`` goes (default
            :func:`~mmsenti.data.mosi_cache.default_cache_dir`: ``<root>/.cache`` or, for a read-only
            ``root``, ``~/.cache/mmsenti/mosi``; ``False``: no cache). An unwritable cache folder is
            reported in ``report["cache"]["error"]``, not raised.
        files: per-input overrides ``{"words"|"audio"|"vision"|"labels": path or None}``; a relative
            path is taken under ``root``; ``None`` disables that modality. A named file that does not
            exist is an error (:class:`~mmsenti.data.csd.CSDError`, listing the ``.csd`` files in ``root``).
        eps: overlap threshold in seconds (SDK 0.0.6: 1e-3).
    """
    t0 = time.perf_counter()
    if mode not in ("aligned", "unaligned"):
        raise ValueError(f"mode must be 'aligned' or 'unaligned', got {mode!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if collapse not in ("mean", "max", "first"):
        raise ValueError(f"collapse must be 'mean', 'max' or 'first', got {collapse!r}")
    if max_frames is not None and int(max_frames) < 1:
        raise ValueError(f"max_frames must be a positive integer or None, got {max_frames!r}")
    root = Path(root)
    paths = _resolve_files(root, files)
    unused = _warn_unused_files(root, paths, files)
    resolved = resolve_folds(root, folds)
    settings = {
        "version": CACHE_VERSION, "mode": mode, "on_error": on_error, "collapse": collapse, "eps": eps,
        "max_frames": None if mode == "aligned" or max_frames is None else int(max_frames),
        "folds": resolved.folds,
        "files": {k: file_stamp(p) for k, p in paths.items()},
    }
    key = cache_key(settings)
    cache_path = None
    if cache_dir is not False:
        cache_path = Path(cache_dir if cache_dir is not None else default_cache_dir(root)) / f"mosi_{mode}_{key}.npz"
        if cache_path.is_file():
            try:
                data = MosiData(*load_cache(cache_path))
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                data = None  # unreadable cache: rebuild and overwrite it
            if data is not None:
                data.report["unused_files"] = unused
                data.report["cache"] = {"hit": True, "path": str(cache_path), "key": key}
                data.report["seconds"] = round(time.perf_counter() - t0, 4)
                return data

    data = _build(root, paths, resolved, mode, on_error, settings["max_frames"], collapse, eps)
    data.report["unused_files"] = unused
    cache_info: dict[str, Any] = {"hit": False, "path": None, "key": key}
    if cache_path is not None:
        try:
            save_cache(data, cache_path)
            cache_info["path"] = str(cache_path)
        except OSError as exc:
            cache_info["error"] = f"could not write cache in {cache_path.parent}: {exc.strerror or exc}"
    data.report["cache"] = cache_info
    data.report["seconds"] = round(time.perf_counter() - t0, 4)
    return data


# ----------------------------------------------------------------------------------------------
# inputs


def _csd_files_in(root: Path) -> list[str]:
    """Names of the ``.csd`` files directly in ``root`` (sorted; empty if it is not a folder)."""
    try:
        return sorted(p.name for p in root.iterdir() if p.suffix.lower() == ".csd" and p.is_file())
    except OSError:
        return []


def _listing(root: Path) -> str:
    names = _csd_files_in(root)
    return f".csd files in {root}: {', '.join(names)}" if names else f"no .csd files in {root}"


def _resolve_files(root: Path, files: Mapping[str, Any] | None) -> dict[str, Path | None]:
    files = dict(files or {})
    unknown = set(files) - set(DEFAULT_FILES)
    if unknown:
        raise ValueError(f"files= has unknown keys {sorted(unknown)}; expected {sorted(DEFAULT_FILES)}")
    out: dict[str, Path | None] = {}
    for key, names in DEFAULT_FILES.items():
        if key in files:
            given = files[key]
            out[key] = None if given is None else (Path(given) if Path(given).is_absolute() else root / given)
            if out[key] is not None and not out[key].is_file():
                raise CSDError(out[key], f"file not found (named as the {key} file, data.files.{key})",
                               hint=f"{_listing(root)}; fix data.files.{key}")
        else:
            found = [root / n for n in names if (root / n).is_file()]
            out[key] = found[0] if found else root / names[0]
    if out["labels"] is None:
        raise ValueError("files['labels'] cannot be None: the label file defines the samples")
    if not out["labels"].is_file():
        raise CSDError(out["labels"], "label file not found",
                       hint=f"{_listing(root)}; name yours with data.files.labels=<file> (files={{'labels': ...}}), "
                            "or fetch the official one with `mmsenti data download mosi --features labels`")
    return out


def _warn_unused_files(root: Path, paths: dict[str, Path | None], files: Mapping[str, Any] | None) -> list[str]:
    """Modality files missing under their SDK names while other ``.csd`` files sit unread: say so once."""
    used = {p.name for p in paths.values() if p is not None and p.is_file() and p.parent == root}
    unused = [n for n in _csd_files_in(root) if n not in used]
    absent = [k for k in ("words", "audio", "vision") if k not in (files or {}) and not _is_file(paths[k])]
    if absent and unused:
        log.warning("%s: no %s file under the SDK name(s) (%s), and %s %s not read; name them with %s",
                    root, "/".join(absent), ", ".join(n for k in absent for n in DEFAULT_FILES[k]), ", ".join(unused),
                    "is" if len(unused) == 1 else "are", " ".join(f"data.files.{k}=<file>" for k in absent))
    return unused


def _is_file(path: Path | None) -> bool:
    return path is not None and path.is_file()


def _clean(x: np.ndarray, counts: Counter) -> np.ndarray:
    """float32 copy-if-needed with NaN/+-inf set to 0; adds what it replaced to ``counts``."""
    x = np.asarray(x, dtype=np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        if not x.flags.writeable:
            x = x.copy()
        counts["nan"] += int(np.count_nonzero(np.isnan(x)))
        counts["posinf"] += int(np.count_nonzero(np.isposinf(x)))
        counts["neginf"] += int(np.count_nonzero(np.isneginf(x)))
        x[bad] = 0.0
    return x


def _groups(q_idx: np.ndarray, f_idx: np.ndarray, n: int) -> list[np.ndarray]:
    counts = np.bincount(q_idx, minlength=n)
    return np.split(f_idx, np.cumsum(counts)[:-1])


def _take(frames: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of ``frames``; a view when they are contiguous."""
    if idx.size and idx[-1] - idx[0] + 1 == idx.size:
        return frames[idx[0] : idx[-1] + 1]
    return frames[idx]


# ----------------------------------------------------------------------------------------------
# processing


def _build(root, paths, resolved, mode, on_error, max_frames, collapse, eps) -> MosiData:
    """Labels and words are read whole (small); frame files are read one video at a time."""
    strict = on_error == "raise"
    labels = read_csd(paths["labels"], strict=strict)
    words = read_csd(paths["words"], strict=strict) if _is_file(paths["words"]) else None
    if words is not None:
        _check_words(words)
    with ExitStack() as stack:
        readers = {m: (stack.enter_context(CSDReader(paths[m], strict=strict)) if _is_file(paths[m]) else None)
                   for m in MODALITIES}
        return _process(root, paths, resolved, labels, words, readers, mode, strict, max_frames, collapse, eps)


def _check_words(words: ComputationalSequence) -> None:
    """A words file stores bytes/strings; numbers there (a feature file under the words name) would
    silently become text such as ``"232.0 1379.0"``."""
    for vid, (feats, _) in words.data.items():
        if np.asarray(feats).dtype.kind not in "SUO":
            raise MosiDataError(
                f"{words.path}: a words file must hold words (bytes, shape (n, 1)), but entry '{vid}' holds "
                f"{np.asarray(feats).dtype} numbers of shape {np.asarray(feats).shape}; this looks like a feature "
                "file: point data.files.words (files={'words': ...}) at the timestamped words .csd")


def _process(
    root: Path,
    paths: dict[str, Path | None],
    resolved,
    labels: ComputationalSequence,
    wseq: ComputationalSequence | None,
    readers: dict[str, CSDReader | None],
    mode: str,
    strict: bool,
    max_frames: int | None,
    collapse: str,
    eps: float,
) -> MosiData:
    on_error = "raise" if strict else "skip"
    dims = {m: (readers[m].feature_dim if readers[m] is not None and readers[m].feature_dim else DEFAULT_DIMS[m])
            for m in MODALITIES}
    assignment = assign_folds(resolved, [*labels.data, *labels.invalid], on_error=on_error)

    skipped = {"videos": Counter(), "segments": Counter(), "modality_entries": Counter()}
    nonfinite = {m: Counter(nan=0, posinf=0, neginf=0) for m in MODALITIES}
    missing = Counter({"text": 0, "audio": 0, "vision": 0})
    videos_missing: dict[str, list[str]] = {k: [] for k in ("words", *MODALITIES)}
    words_without_frames = Counter({m: 0 for m in MODALITIES})
    segments_without_frames = Counter({m: 0 for m in MODALITIES})
    subsampled = Counter({m: 0 for m in MODALITIES})
    segments_without_words = 0
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    split_videos = Counter()
    dropped: dict[str, Counter] = {s: Counter() for s in SPLITS}
    modality_dropped: dict[str, Counter] = {s: Counter() for s in SPLITS}
    zero_length: dict[str, int] = {s: 0 for s in SPLITS}
    zero_length_examples: list[str] = []

    for vid, reason in labels.invalid.items():
        if vid in assignment.split_of:
            skipped["videos"][f"labels entry invalid: {reason}"] += 1  # its rows are unusable
            dropped[assignment.split_of[vid]][f"whole video, labels entry invalid: {reason}"] += 1

    order = [v for s in SPLITS for v in resolved.folds[s] if v in assignment.split_of and v in labels.data]
    for vid in order:
        split = assignment.split_of[vid]
        label_feats, seg_iv = labels.data[vid]
        seg_iv = np.asarray(seg_iv, dtype=np.float64)
        label_vals = np.asarray(label_feats, dtype=np.float64).reshape(len(seg_iv), -1)[:, 0]
        n_seg = len(seg_iv)
        finite = np.isfinite(label_vals)
        if not finite.all():
            if strict:
                raise MosiDataError(
                    f"{paths['labels']}: video '{vid}' has {int((~finite).sum())} non-finite label(s); "
                    "fix the label file or load with on_error='skip'"
                )
            skipped["segments"]["non-finite label"] += int((~finite).sum())
            dropped[split]["non-finite label"] += int((~finite).sum())
        ids = [csd_segment_id(vid, k, n_seg) for k in range(n_seg)]
        short = np.flatnonzero(finite & (seg_iv[:, 1] <= seg_iv[:, 0]))
        zero_length[split] += int(short.size)
        zero_length_examples.extend(ids[k] for k in short[: max(0, 10 - len(zero_length_examples))])

        # words of the video (sorted by start) and their membership in segments
        text: list[str | None] = [None] * n_seg
        seg_words: list[np.ndarray] | None = None
        w_iv = None
        if wseq is not None and vid in wseq.data:
            w_feats, w_iv = sort_by_start(*wseq.data[vid])
            w_iv = np.asarray(w_iv, dtype=np.float64)
            tokens = decode_words(w_feats)
            spoken = np.array([t.strip().lower() != SILENCE for t in tokens], dtype=bool)
            q_idx, w_idx = overlap_pairs(w_iv, seg_iv, eps)
            keep = spoken[w_idx]
            seg_words = _groups(q_idx[keep], w_idx[keep], n_seg)
            text = [" ".join(tokens[i] for i in idx) for idx in seg_words]
            segments_without_words += sum(1 for k, idx in enumerate(seg_words) if idx.size == 0 and finite[k])
        elif wseq is not None and vid not in wseq.invalid:
            videos_missing["words"].append(vid)

        feats: dict[str, list[np.ndarray | None]] = {}
        for m in MODALITIES:
            reader = readers[m]
            if reader is not None and vid not in reader:
                videos_missing[m].append(vid)
            entry = None
            if reader is not None and vid in reader and not (mode == "aligned" and seg_words is None):
                entry = reader.read(vid)  # None if invalid (non-strict; recorded in reader.invalid)
            if entry is None:
                if reader is not None and vid in reader.invalid:
                    modality_dropped[split][f"{m} entry invalid: {reader.invalid[vid]}"] += int(finite.sum())
                feats[m] = [None] * n_seg
                continue
            f, f_iv = sort_by_start(*entry)
            f = _clean(f, nonfinite[m])
            f_iv = np.asarray(f_iv, dtype=np.float64)
            if mode == "aligned":
                used = np.unique(np.concatenate(seg_words)) if n_seg else np.zeros(0, np.int64)
                aligned = collapse_frames(f, f_iv, w_iv[used], how=collapse, eps=eps)
                row_of = np.full(len(w_iv), -1, dtype=np.int64)
                row_of[used] = np.arange(used.size)
                per = []
                for k, idx in enumerate(seg_words):
                    rows = row_of[idx]
                    if finite[k]:
                        words_without_frames[m] += int(np.count_nonzero(aligned.counts[rows] == 0))
                    per.append(aligned.features[rows])
                feats[m] = per
            else:
                q_idx, f_idx = overlap_pairs(f_iv, seg_iv, eps)
                per = []
                for k, idx in enumerate(_groups(q_idx, f_idx, n_seg)):
                    rows = _take(f, idx) if idx.size else np.zeros((0, f.shape[1]), np.float32)
                    if finite[k]:
                        segments_without_frames[m] += int(idx.size == 0)
                        if max_frames is not None and len(rows) > max_frames:
                            subsampled[m] += 1
                    per.append(subsample_frames(rows, max_frames))
                feats[m] = per

        for k in range(n_seg):
            if not finite[k]:
                continue
            sample = {
                "id": ids[k],
                "text": text[k],
                "audio": feats["audio"][k],
                "vision": feats["vision"][k],
                "label": float(label_vals[k]),
            }
            if sample["text"] is None:
                missing["text"] += 1
            for m in MODALITIES:
                if sample[m] is None:
                    missing[m] += 1
            splits[split].append(sample)
        split_videos[split] += 1

    sources = [("labels", labels), ("words", wseq), *readers.items()]
    invalid = {k: dict(s.invalid) for k, s in sources if s is not None and s.invalid}
    for k, entries in invalid.items():
        if k != "labels":
            for vid, reason in entries.items():
                if vid in assignment.split_of:
                    skipped["modality_entries"][f"{k} entry invalid: {reason}"] += 1
                    if k == "words" and vid in labels.data:  # no text for the video's segments
                        split = assignment.split_of[vid]
                        modality_dropped[split][f"words entry invalid: {reason}"] += len(labels.data[vid][1])
    report = {
        "mode": mode,
        "root": str(root),
        "files": {k: (str(p) if p is not None and p.is_file() else None) for k, p in paths.items()},
        "missing_files": sorted(k for k, p in paths.items() if k != "labels" and (p is None or not p.is_file())),
        "folds_source": resolved.source,
        "segments": {s: len(splits[s]) for s in SPLITS},
        "videos": {s: int(split_videos[s]) for s in SPLITS},
        "nonfinite_replaced": {m: dict(c) for m, c in nonfinite.items()},
        "missing_modality": dict(missing),
        "videos_missing_from": {k: len(v) for k, v in videos_missing.items()},
        "words_without_frames": dict(words_without_frames),
        "segments_without_frames": dict(segments_without_frames),
        "segments_without_words": int(segments_without_words),
        "subsampled_segments": dict(subsampled),
        "skipped": {k: dict(v) for k, v in skipped.items()},
        "invalid_entries": invalid,
        "unknown_fold_ids": assignment.num_unknown,
        "unknown_fold_examples": [v for ids in assignment.unknown.values() for v in ids][:10],
        "videos_not_in_folds": len(assignment.unassigned),
        "zero_length_segments": zero_length,
        "zero_length_examples": zero_length_examples,
        "dropped": {s: dict(c) for s, c in dropped.items()},
        "modality_dropped": {s: dict(c) for s, c in modality_dropped.items()},
    }
    return MosiData(splits=splits, audio_dim=int(dims["audio"]), vision_dim=int(dims["vision"]), report=report)
