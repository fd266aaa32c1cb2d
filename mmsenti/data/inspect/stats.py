"""Statistics of a data set for ``mmsenti data inspect``: :func:`inspect_path` -> one JSON-ready dict.

Detects the input kind (suffix, else the file's first bytes), loads it with the data layer's own
readers and counts labels, splits, feature statistics, NaN/inf and fold coverage. The views
(:mod:`.render`, :mod:`.plot`) read only the dict this returns.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mmsenti.errors import MmsentiError

from ..folds import SPLITS
from ..ids import video_of

__all__ = ["LABEL_BINS", "inspect_path", "to_jsonable"]

LABEL_BINS = tuple(range(-3, 4))
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_LABEL_FILE = "CMU_MOSI_Opinion_Labels.csd"


# ----------------------------------------------------------------------------------------------
# statistics helpers


class _Running:
    """Per-dimension count/sum/sum of squares/min/max over finite values, fed in chunks."""

    def __init__(self, dim: int):
        self.dim = dim
        self.rows = 0
        self.count = np.zeros(dim, np.int64)
        self.sum = np.zeros(dim, np.float64)
        self.sumsq = np.zeros(dim, np.float64)
        self.min = np.full(dim, np.inf)
        self.max = np.full(dim, -np.inf)
        self.nonfinite = Counter(nan=0, posinf=0, neginf=0)
        self.zero_rows = 0

    def add(self, x: np.ndarray) -> None:
        if not len(x):  # a segment without frames (e.g. a zero-length one): nothing to add
            return
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        ok = np.isfinite(x)
        if not ok.all():
            self.nonfinite["nan"] += int(np.count_nonzero(np.isnan(x)))
            self.nonfinite["posinf"] += int(np.count_nonzero(np.isposinf(x)))
            self.nonfinite["neginf"] += int(np.count_nonzero(np.isneginf(x)))
        clean = np.where(ok, x, 0.0)
        self.rows += len(x)
        self.count += ok.sum(0)
        self.sum += clean.sum(0)
        self.sumsq += np.square(clean).sum(0)
        self.min = np.minimum(self.min, np.where(ok, x, np.inf).min(0))
        self.max = np.maximum(self.max, np.where(ok, x, -np.inf).max(0))
        self.zero_rows += int(np.count_nonzero(~clean.any(axis=1)))

    def result(self) -> dict[str, Any]:
        n = np.maximum(self.count, 1)
        mean = self.sum / n
        std = np.sqrt(np.maximum(self.sumsq / n - mean**2, 0.0))
        has = self.count > 0
        lo = np.where(has, self.min, np.nan)
        hi = np.where(has, self.max, np.nan)
        summary = {
            "mean_of_means": _f(mean[has].mean()) if has.any() else None,
            "mean_range": [_f(mean[has].min()), _f(mean[has].max())] if has.any() else None,
            "std_range": [_f(std[has].min()), _f(std[has].max())] if has.any() else None,
            "min": _f(lo[has].min()) if has.any() else None,
            "max": _f(hi[has].max()) if has.any() else None,
            "constant_dims": int(np.count_nonzero(has & (std < 1e-12))),
        }
        return {
            "dim": self.dim,
            "frames": int(self.rows),
            "zero_rows": int(self.zero_rows),
            "nonfinite": dict(self.nonfinite),
            "summary": summary,
            "per_dim": {"mean": mean, "std": std, "min": lo, "max": hi},
        }


def _f(x: Any) -> float | None:
    x = float(x)
    return round(x, 6) if math.isfinite(x) else None


def _dist(values: list[float] | np.ndarray) -> dict[str, Any] | None:
    """min / mean / median / max of a list (None when empty)."""
    v = np.asarray(values, dtype=np.float64)
    if not v.size:
        return None
    return {"min": _f(v.min()), "mean": _f(v.mean()), "median": _f(np.median(v)), "max": _f(v.max())}


def _label_stats(labels: list[float]) -> dict[str, Any]:
    v = np.asarray(labels, dtype=np.float64)
    # MMSA's Mult_acc_7 classes: np.round of the label clipped to [-3, 3] (half to even)
    bins = np.round(np.clip(v, -3, 3)).astype(int) if v.size else np.zeros(0, int)
    hist = [int(np.count_nonzero(bins == b)) for b in LABEL_BINS]
    out: dict[str, Any] = {"n": int(v.size), "histogram": hist}
    if v.size:
        out.update(mean=_f(v.mean()), std=_f(v.std()), min=_f(v.min()), max=_f(v.max()),
                   positive=int(np.count_nonzero(v > 0)), zero=int(np.count_nonzero(v == 0)),
                   negative=int(np.count_nonzero(v < 0)))
    return out


def to_jsonable(obj: Any) -> Any:
    """numpy arrays/scalars -> lists/numbers (6 decimals), non-finite floats -> None, Paths -> str."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (np.integer, bool, np.bool_)):
        return obj.item() if isinstance(obj, np.generic) else obj
    if isinstance(obj, (float, np.floating)):
        return _f(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ----------------------------------------------------------------------------------------------
# detection and loading


def _sniff(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csd":
        return "csd"
    if suffix in (".pkl", ".pickle"):
        return "pickle"
    if suffix in (".csv", ".tsv"):
        return "csv"
    with path.open("rb") as fh:
        head = fh.read(8)
    if head.startswith(_HDF5_MAGIC):
        return "csd"
    if head[:1] == b"\x80":
        return "pickle"
    return "csv"


def _mosei_labels(path: Path) -> bool:
    """Does the folder hold a CMU-MOSEI label file (the SDK's names, :data:`mmsenti.data.mosei.DEFAULT_FILES`)?"""
    from ..mosei import DEFAULT_FILES

    return any((path / name).is_file() for name in DEFAULT_FILES["labels"])


def _folder_target(path: Path) -> Path | None:
    """A folder: CSD set if it has a CMU-MOSI or CMU-MOSEI label file, else its one MMSA pickle / label.csv."""
    if (path / _LABEL_FILE).is_file() or _mosei_labels(path):
        return None
    candidates = sorted([*path.glob("*.pkl"), *path.glob("label.csv")])
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(p.name for p in sorted(path.iterdir()) if not p.name.startswith("."))[:200] or "nothing"
    raise MmsentiError(
        f"{path}: not a data folder: expected {_LABEL_FILE} or CMU_MOSEI_Labels.csd (+ words/COVAREP/FACET .csd "
        "files), or one MMSA "
        f".pkl or label.csv (found {found}); pass a file instead, see datasets/mosi/README.md"
    )


def inspect_path(path: str | os.PathLike, mode: str = "aligned", encoding: str = "utf-8") -> dict[str, Any]:
    """Inspect a data folder or file (see the module doc); returns a JSON-ready dict.

    ``encoding`` is the text encoding of a ``label.csv`` (other inputs are binary)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MmsentiError(f"{path}: no such file or folder")
    if path.is_dir():
        target = _folder_target(path)
        if target is None:
            return _inspect_csd_set(path, mode)
        path = target
    kind = _sniff(path)
    if kind == "pickle":
        from ..mmsa import load_mmsa_pickle

        data = load_mmsa_pickle(path)
        return _from_samples(path, "mmsa_pickle", None, data.splits, data.audio_dim, data.vision_dim,
                             _mmsa_report(data.report), loader_report=data.report.as_dict())
    if kind == "csv":
        from ..mmsa import load_label_csv

        data = load_label_csv(path, encoding=encoding)
        return _from_samples(path, "label_csv", None, data.splits, 0, 0, {}, loader_report=data.report.as_dict())
    return _inspect_csd_file(path, mode)


def _inspect_csd_set(root: Path, mode: str, files: dict | None = None, kind: str = "csd_folder",
                     path: Path | None = None) -> dict[str, Any]:
    from ..mosei import load_mosei_csd
    from ..mosi import load_mosi_csd

    # a folder with a CMU-MOSEI label file (and no MOSI one) is MOSEI: its file names, its standard folds
    mosei = files is None and not (root / _LABEL_FILE).is_file() and _mosei_labels(root)
    loader = load_mosei_csd if mosei else load_mosi_csd
    data = loader(root, mode=mode, on_error="skip", cache_dir=False, files=files)  # type: ignore[arg-type]
    rep = data.report
    problems = {
        "missing_files": rep["missing_files"],
        "videos_missing_from": rep["videos_missing_from"],
        "segments_without_words": rep["segments_without_words"],
        "words_without_frames": rep["words_without_frames"] if mode == "aligned" else None,
        "segments_without_frames": rep["segments_without_frames"] if mode == "unaligned" else None,
        "skipped": rep["skipped"],
        "invalid_entries": rep["invalid_entries"],
        "unknown_fold_ids": rep["unknown_fold_ids"],
        "unknown_fold_examples": rep["unknown_fold_examples"],
        "videos_not_in_folds": rep["videos_not_in_folds"],
        "zero_length_segments": sum(rep["zero_length_segments"].values()),
        "zero_length_examples": rep["zero_length_examples"],
        "unused_files": rep.get("unused_files", []) if files is None else [],
    }
    nonfinite = {m: rep["nonfinite_replaced"][m] for m in ("audio", "vision") if m not in rep["missing_files"]}
    out = _from_samples(path or root, kind, mode, data.splits, data.audio_dim, data.vision_dim, problems,
                        loader_report=rep, nonfinite=nonfinite)
    out["folds_source"] = rep["folds_source"]
    out["files"] = rep["files"]
    out["dataset"] = rep.get("dataset", "CMU-MOSI")
    if "words" in rep["missing_files"]:
        out["text"] = None
    return out


def _mmsa_report(report: Any) -> dict[str, Any]:
    return {k: v for k, v in report.as_dict().items() if k not in ("source", "samples")}


def _from_samples(path: Path, kind: str, mode: str | None, splits: dict[str, list[dict]], audio_dim: int,
                  vision_dim: int, problems: dict, *, loader_report: Any,
                  nonfinite: dict | None = None) -> dict[str, Any]:
    names = [s for s in SPLITS if s in splits] + [s for s in splits if s not in SPLITS]
    split_info = {}
    labels = {}
    for s in names:
        samples = splits[s]
        split_info[s] = {"segments": len(samples), "videos": len({video_of(x["id"]) for x in samples})}
        labels[s] = _label_stats([x["label"] for x in samples])
    every = [x for s in names for x in splits[s]]
    labels["all"] = _label_stats([x["label"] for x in every])
    split_info["all"] = {"segments": len(every), "videos": len({video_of(x["id"]) for x in every})}

    features: dict[str, Any] = {}
    for m, dim in (("audio", audio_dim), ("vision", vision_dim)):
        present = [x[m] for x in every if x.get(m) is not None]
        if not dim or not present:
            features[m] = None
            continue
        run = _Running(dim)
        for frames in present:
            run.add(frames)
        res = run.result()
        res["segments_with_frames"] = sum(1 for p in present if len(p))
        res["segments_missing"] = len(every) - res["segments_with_frames"]
        res["frames_per_segment"] = _dist([len(p) for p in present])
        # the loaders set NaN/inf to 0 and count them: report their counts (the arrays here are finite)
        if nonfinite is not None and m in nonfinite:
            res["nonfinite"] = dict(nonfinite[m])
        elif kind == "mmsa_pickle":
            res["nonfinite"] = {"total": int(problems.get(f"nonfinite_{m}", 0))}
        features[m] = res

    texts = [x.get("text") for x in every]
    with_text = [t for t in texts if t is not None and t.strip()]
    text = {
        "segments_with_text": len(with_text),
        "segments_without_text": len(texts) - len(with_text),
        "words_per_segment": _dist([len(t.split()) for t in with_text]),
        "vocabulary": len({w for t in with_text for w in t.split()}),
    } if with_text or kind != "label_csd" else None

    return {
        "path": str(path),
        "name": path.name,
        "kind": kind,
        "mode": mode,
        "splits": split_info,
        "labels": {"bins": list(LABEL_BINS), **labels},
        "features": features,
        "text": text,
        "problems": problems,
        "loader_report": loader_report,
    }


def _inspect_csd_file(path: Path, mode: str) -> dict[str, Any]:
    from ..csd import CSDReader, decode_words

    with CSDReader(path, strict=False) as reader:
        first = next((e for e in (reader.read(v) for v in reader.videos) if e is not None), None)
        is_labels = first is not None and first[0].dtype.kind not in "SUO" and first[0].shape[1] == 1
        if not is_labels:
            return _feature_file(path, reader, first, decode_words)
    files = {"labels": path, "words": None, "audio": None, "vision": None}
    out = _inspect_csd_set(path.parent, "aligned", files=files, kind="label_csd", path=path)
    # a lone label file has no other inputs by design: keep only the problems it can have
    out["problems"] = {k: v for k, v in out["problems"].items()
                       if k in ("skipped", "invalid_entries", "unknown_fold_ids", "unknown_fold_examples",
                                "videos_not_in_folds", "zero_length_segments", "zero_length_examples")}
    out["features"] = {"audio": None, "vision": None}
    out["mode"] = None
    return out


def _feature_file(path: Path, reader, first, decode_words) -> dict[str, Any]:
    from ..folds import resolve_folds

    is_words = first is not None and first[0].dtype.kind in "SUO"
    rows, durations, runner = [], [], None
    tokens = Counter()
    for vid in reader.videos:
        entry = reader.read(vid)
        if entry is None:
            continue
        feats, iv = entry
        rows.append(len(feats))
        durations.append(float(np.max(iv[:, 1]) - np.min(iv[:, 0])))
        if is_words:
            tokens.update(decode_words(feats))
        else:
            runner = runner or _Running(int(feats.shape[1]))
            runner.add(feats)
    try:
        folds = resolve_folds(path.parent).folds
    except MmsentiError:
        folds = {s: [] for s in SPLITS}
    have = set(reader.videos)
    coverage = {s: sum(1 for v in folds[s] if v in have) for s in SPLITS}
    coverage["not_in_folds"] = len(have - {v for s in SPLITS for v in folds[s]})
    med_rate = float(np.median(np.asarray(rows) / np.maximum(durations, 1e-9))) if rows else None
    out: dict[str, Any] = {
        "path": str(path),
        "name": path.name,
        "kind": "words_csd" if is_words else "feature_csd",
        "mode": None,
        "root_name": reader.name,
        "videos": len(reader.videos),
        "videos_per_fold": coverage,
        "rows": int(sum(rows)),
        "rows_per_video": _dist(rows),
        "seconds_per_video": _dist(durations),
        "rows_per_second": _f(med_rate) if med_rate is not None else None,
        "problems": {"invalid_entries": dict(reader.invalid)},
        "metadata": {k: reader.metadata.get(k) for k in ("dataset name", "computational sequence description",
                                                         "dataset version") if k in reader.metadata},
    }
    if is_words:
        spoken = {w: c for w, c in tokens.items() if w.strip().lower() != "sp"}
        out["words"] = {"tokens": int(sum(tokens.values())), "silence_tokens": int(tokens.get("sp", 0)),
                        "spoken": int(sum(spoken.values())), "vocabulary": len(spoken)}
    else:
        out["features"] = runner.result() if runner else None
    return out
