"""Load CH-SIMS (Yu et al., 2020) in MMSA-FET's layout: ``label.csv`` with unimodal labels + extracted features.

CH-SIMS is a Chinese set of 2,281 clips from 60 videos, each with a multimodal label and one label
per modality (text, audio, vision), all in [-1, 1]. MMSA-FET ships it as::

    ROOT/label.csv                    video_id, clip_id, text, label, label_T, label_A, label_V, annotation, mode
    ROOT/Raw/<video_id>/<clip_id>.mp4 the clips

Features come from the clips through ``mmsenti extract ROOT --out ROOT/features`` (:mod:`mmsenti.media.extract`
takes exactly this layout and ignores the extra columns): per-clip computational sequences keyed
``<video_id>$_$<clip_id>`` with a one-row label entry per clip, plus ``folds.json``. This loader
reads:

* ``label.csv`` through the one reader of that layout (:func:`mmsenti.data.mmsa.read_label_csv`):
  the sample's ``text`` (Chinese; ``None`` when empty), ``label`` and its unimodal labels
  ``label_T``/``label_A``/``label_V`` (:data:`~mmsenti.data.mmsa.UNIMODAL_LABEL_COLUMNS`, which the
  collator puts in the batch as ``text_labels``/``audio_labels``/``vision_labels``);
* the ``mode`` column as the folds (by clip id ``<video_id>$_$<clip_id>``; ``folds=`` overrides it);
* audio/vision frames from ``ROOT/<features>`` (default ``features``) through the CMU-MOSI loader
  (:func:`mmsenti.data.mosi.load_mosi_csd`: its cache, report and ``on_error`` policy), at their own
  rate (``mode="unaligned"``; CH-SIMS has no word timings, so ``"aligned"`` needs a words file
  there). A clip of ``label.csv`` without features keeps its text and labels, with no audio/vision
  (counted in ``report["modality_dropped"]``). Without a features folder the set is text only
  (``audio_dim = vision_dim = 0``, like a plain ``label.csv``).

MMSA's processed SIMS pickle (``unaligned_39.pkl``, with ``regression_labels_T/A/V``) goes through
:func:`mmsenti.data.mmsa.load_mmsa_pickle` (``data.source=mmsa``): the same safe unpickler as MOSI's.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Literal, Mapping

from mmsenti.errors import MmsentiError

from .align import EPS, Collapse
from .csd import CSDReader
from .folds import SPLITS, FoldAssignment, ResolvedFolds, assign_folds, resolve_folds
from .ids import video_of
from .mmsa import read_label_csv
from .mosi import DEFAULT_FILES, MosiData, load_mosi_csd

__all__ = ["FEATURES_DIR", "LABEL_FILE", "SimsDataError", "load_sims"]

log = logging.getLogger(__name__)

LABEL_FILE = "label.csv"
FEATURES_DIR = "features"


class SimsDataError(MmsentiError):
    """A CH-SIMS folder cannot be read as asked (message names the folder and the fix)."""


def load_sims(
    root: str | os.PathLike,
    mode: Literal["aligned", "unaligned"] = "unaligned",
    folds: Mapping[str, list[str]] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    max_frames: int | None = None,
    collapse: Collapse = "mean",
    cache_dir: str | os.PathLike | Literal[False] | None = None,
    files: Mapping[str, str | os.PathLike | None] | None = None,
    features: str | os.PathLike | None = FEATURES_DIR,
    encoding: str = "utf-8",
    eps: float = EPS,
) -> MosiData:
    """Load a CH-SIMS folder (or its ``label.csv``) into train/valid/test sample lists.

    Args:
        root: the folder holding ``label.csv`` (or the ``label.csv`` itself).
        mode, on_error, max_frames, collapse, cache_dir, eps: as for :func:`~mmsenti.data.mosi.load_mosi_csd`,
            applied to the features.
        folds: ``{"train": [clip ids], ...}``; default: the ``mode`` column.
        files: the features' file names when not the ones ``mmsenti extract`` writes (as for the CSD loader).
        features: the features folder, relative to ``root`` or absolute; ``None``: text only.
        encoding: ``label.csv``'s text encoding.
    """
    root = Path(root)
    csv_path = root if root.is_file() else root / LABEL_FILE
    if not csv_path.is_file():
        raise SimsDataError(f"{root}: no {LABEL_FILE}; a CH-SIMS folder holds MMSA-FET's label.csv (and Raw/), "
                            "see docs/datasets.md, or write a synthetic one with `mmsenti data synth --format sims`")
    base = csv_path.parent
    rows = read_label_csv(csv_path, encoding=encoding)
    if folds is None:
        resolved = ResolvedFolds({s: [r.id for r in rows if r.mode == s] for s in SPLITS}, f"{csv_path} (mode column)")
    else:
        resolved = resolve_folds(None, folds)
    by_id = {r.id: r for r in rows}
    assignment = assign_folds(resolved, by_id, on_error=on_error)

    feats_dir = None if features is None else (Path(features) if Path(features).is_absolute() else base / features)
    label_csd = None if feats_dir is None else feats_dir / ((files or {}).get("labels") or DEFAULT_FILES["labels"][0])
    frames: dict[str, dict] = {}
    feature_report: dict[str, Any] | None = None
    dims = {"audio": 0, "vision": 0}
    only_in_features = 0
    if label_csd is not None and label_csd.is_file():
        named = _feature_files(feats_dir, files)
        if mode == "aligned" and named["words"] is None:
            raise SimsDataError(f"{feats_dir}: aligned mode needs word timings (a words .csd) and there is none; "
                                "CH-SIMS is read unaligned: set data.mode=unaligned")
        with CSDReader(label_csd) as reader:
            present = set(reader.videos)
        only_in_features = len(present - set(by_id))
        inner = {s: [v for v in resolved.folds[s] if v in present and v in assignment.split_of] for s in SPLITS}
        data = load_mosi_csd(feats_dir, mode=mode, folds=inner, on_error=on_error, max_frames=max_frames,
                             collapse=collapse, cache_dir=cache_dir, files=named, eps=eps)
        frames = {s["id"]: s for split in data.splits.values() for s in split}
        feature_report = data.report
        dims = {"audio": data.audio_dim, "vision": data.vision_dim}
    elif features is not None and features != FEATURES_DIR:
        raise SimsDataError(f"{feats_dir}: no extracted features there ({label_csd.name} missing); run "
                            f"`mmsenti extract {base} --out {feats_dir}`, or set data.source_options.features=null "
                            "for text only")
    elif features is not None:
        log.warning("%s: no %s/ folder of extracted features; CH-SIMS is read text only (extract them with "
                    "`mmsenti extract %s --out %s`)", base, FEATURES_DIR, base, feats_dir)
    data = _samples(csv_path, feats_dir if feature_report else None, resolved, assignment, by_id, frames,
                    feature_report, dims, mode)
    data.report["clips_only_in_features"] = only_in_features
    return data


def _feature_files(feats_dir: Path, files: Mapping[str, Any] | None) -> dict[str, Any]:
    """The CSD loader's ``files=``: named files kept, the rest by their default name or ``None`` when absent
    (``mmsenti extract`` writes no words file for a set without word timings, and that is no warning)."""
    named = dict(files or {})
    out: dict[str, Any] = {}
    for key, names in DEFAULT_FILES.items():
        if key in named and named[key] is not None:
            out[key] = named[key]
        elif key in named:
            out[key] = None
        else:
            found = [n for n in names if (feats_dir / n).is_file()]
            out[key] = found[0] if found else None
    out["labels"] = out["labels"] or DEFAULT_FILES["labels"][0]
    return out


def _samples(csv_path: Path, feats_dir: Path | None, resolved: ResolvedFolds, assignment: FoldAssignment,
             by_id: dict, frames: dict[str, dict], feature_report: dict[str, Any] | None, dims: dict[str, int],
             mode: str) -> MosiData:
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    modality_dropped: dict[str, Counter] = {s: Counter() for s in SPLITS}
    missing = Counter({"text": 0, "audio": 0, "vision": 0})
    unimodal = 0
    for split in SPLITS:
        for clip in resolved.folds[split]:
            row = by_id.get(clip)
            if row is None:
                continue  # counted by assign_folds (on_error="skip")
            found = frames.get(clip)
            sample = {"id": clip, "text": row.text or None,
                      "audio": None if found is None else found["audio"],
                      "vision": None if found is None else found["vision"],
                      "label": row.label, **row.unimodal_labels()}
            unimodal += row.unimodal is not None
            if feats_dir is not None and found is None:
                modality_dropped[split]["no extracted features for the clip"] += 1
            for m in ("text", "audio", "vision"):
                missing[m] += sample[m] is None
            splits[split].append(sample)
    report = {
        "dataset": "CH-SIMS",
        "mode": mode,
        "label_csv": str(csv_path),
        "features": None if feats_dir is None else str(feats_dir),
        "folds_source": resolved.source,
        "segments": {s: len(v) for s, v in splits.items()},
        "videos": {s: len({video_of(x["id"]) for x in v}) for s, v in splits.items()},
        "unimodal_labels": unimodal,
        "missing_modality": dict(missing),
        "unknown_fold_ids": assignment.num_unknown,
        "clips_not_in_folds": len(assignment.unassigned),
        "dropped": {},
        "modality_dropped": {s: dict(c) for s, c in modality_dropped.items() if c},
        "feature_report": feature_report,
        "cache": (feature_report or {}).get("cache", {"hit": False, "path": None}),
    }
    return MosiData(splits=splits, audio_dim=int(dims["audio"]), vision_dim=int(dims["vision"]), report=report)
