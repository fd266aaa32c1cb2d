"""``mmsenti data inspect``: what is in a data set, before anything trains on it.

Accepted inputs (detected by suffix, else by the file's first bytes):

* a folder of CMU-MOSI computational sequences (``CMU_MOSI_Opinion_Labels.csd`` + words/COVAREP/
  FACET, real or synthetic) - loaded with :func:`~mmsenti.data.mosi.load_mosi_csd`
  (``on_error="skip"`` so malformed entries are counted, no cache written);
* a single ``.csd`` file: a label file (one numeric column) is loaded alone, with its folder's
  ``folds.json`` or the SDK's standard folds; a words or frame-feature file is summarised per
  video (rows, durations, per-dimension statistics, NaN/inf, fold coverage);
* an MMSA processed pickle (``aligned_50.pkl`` / ``unaligned_50.pkl``), read with the restricted
  unpickler of :mod:`mmsenti.data.mmsa`;
* an MMSA-FET ``label.csv`` (text only).

:func:`inspect_path` returns one JSON-ready dict; :func:`render_text` prints it as tables;
:func:`plot_labels` draws the label histogram of every split (matplotlib, Agg backend). Nothing is
ever written next to the data: the figure goes only where ``--plot`` says.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mmsenti.errors import MmsentiError

from .ids import video_of

__all__ = ["LABEL_BINS", "inspect_path", "plot_labels", "render_text", "to_jsonable"]

LABEL_BINS = tuple(range(-3, 4))
SPLITS = ("train", "valid", "test")
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


def _folder_target(path: Path) -> Path | None:
    """A folder: CSD set if it has the label file, else its one MMSA pickle / label.csv."""
    if (path / _LABEL_FILE).is_file():
        return None
    candidates = sorted([*path.glob("*.pkl"), *path.glob("label.csv")])
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(p.name for p in sorted(path.iterdir()) if not p.name.startswith("."))[:200] or "nothing"
    raise MmsentiError(
        f"{path}: not a data folder: expected {_LABEL_FILE} (+ words/COVAREP/FACET .csd files), or one MMSA "
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
        from .mmsa import load_mmsa_pickle

        data = load_mmsa_pickle(path)
        return _from_samples(path, "mmsa_pickle", None, data.splits, data.audio_dim, data.vision_dim,
                             _mmsa_report(data.report), loader_report=data.report.as_dict())
    if kind == "csv":
        from .mmsa import load_label_csv

        data = load_label_csv(path, encoding=encoding)
        return _from_samples(path, "label_csv", None, data.splits, 0, 0, {}, loader_report=data.report.as_dict())
    return _inspect_csd_file(path, mode)


def _inspect_csd_set(root: Path, mode: str, files: dict | None = None, kind: str = "csd_folder",
                     path: Path | None = None) -> dict[str, Any]:
    from .mosi import load_mosi_csd

    data = load_mosi_csd(root, mode=mode, on_error="skip", cache_dir=False, files=files)  # type: ignore[arg-type]
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
    from .csd import CSDReader, decode_words

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
    from .folds import resolve_folds

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


# ----------------------------------------------------------------------------------------------
# text view


def _num(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, (int, np.integer)):
        return f"{x:,}"
    return f"{x:.{digits}f}"


def render_text(info: dict[str, Any], console=None) -> None:
    """Print ``info`` (from :func:`inspect_path`) as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(highlight=False)
    kind_doc = {
        "csd_folder": "CMU-MOSI computational sequences",
        "label_csd": "label file only",
        "mmsa_pickle": "MMSA processed pickle",
        "label_csv": "MMSA-FET label.csv, text only",
        "words_csd": "timestamped words file",
        "feature_csd": "frame feature file",
    }[info["kind"]]
    head = f"[bold]{info['name']}[/bold] ({kind_doc}"
    if info.get("mode"):
        head += f", {info['mode']}"
    if info.get("folds_source"):
        src = info["folds_source"]
        head += ", SDK standard folds" if src == "sdk" else f", folds from {Path(src).name}"
    console.print(head + ")")
    console.print(f"[dim]{info['path']}[/dim]")

    if info["kind"] in ("words_csd", "feature_csd"):
        _render_feature_file(info, console, Table)
        return

    table = Table(title="Splits and labels", title_justify="left")
    for col in ("split", "videos", "segments", "mean", "std", "min", "max", "neg/0/pos"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for s, c in info["splits"].items():
        lab = info["labels"][s]
        npz = f"{lab.get('negative', 0)}/{lab.get('zero', 0)}/{lab.get('positive', 0)}" if lab["n"] else "-"
        table.add_row(s, _num(c["videos"]), _num(c["segments"]), _num(lab.get("mean")), _num(lab.get("std")),
                      _num(lab.get("min")), _num(lab.get("max")), npz, style="bold" if s == "all" else None,
                      end_section=s == list(info["splits"])[-2])
    console.print(table)

    split_names = [s for s in info["splits"] if s != "all"]
    hist = Table(title="Label histogram (rounded to -3..3, as Acc-7 counts)", title_justify="left")
    hist.add_column("label", justify="right")
    for s in split_names + ["all"]:
        hist.add_column(s, justify="right")
    hist.add_column("share of all", justify="left")
    total = max(info["labels"]["all"]["n"], 1)
    biggest = max(max(info["labels"]["all"]["histogram"]), 1)
    for i, b in enumerate(info["labels"]["bins"]):
        n_all = info["labels"]["all"]["histogram"][i]
        bar = "█" * round(16 * n_all / biggest)
        hist.add_row(f"{b:+d}" if b else "0", *[_num(info["labels"][s]["histogram"][i]) for s in split_names],
                     _num(n_all), f"{bar} {100 * n_all / total:.1f}%")
    console.print(hist)

    feats = {m: f for m, f in (info.get("features") or {}).items() if f}
    if feats:
        ft = Table(title="Frame features (per-dimension arrays in --json)", title_justify="left")
        ft.add_column("")
        for m in feats:
            ft.add_column(m, justify="right")

        def rng(pair: list | None) -> str:
            return f"{pair[0]:.2f} .. {pair[1]:.2f}" if pair else "-"

        def nonfinite(f: dict) -> str:
            nf = f["nonfinite"]
            if "total" in nf:
                return _num(nf["total"])
            return f"{nf.get('nan', 0):,} / {nf.get('posinf', 0):,} / {nf.get('neginf', 0):,}"

        def per_seg(f: dict) -> str:
            d = f["frames_per_segment"]
            return f"{d['min']:.0f} / {d['median']:.0f} / {d['max']:.0f}" if d else "-"

        rows = [
            ("dimensions", lambda f: str(f["dim"])),
            ("frames (rows)", lambda f: _num(f["frames"])),
            ("segments with / without frames", lambda f: f"{f['segments_with_frames']:,} / {f['segments_missing']:,}"),
            ("frames per segment min / median / max", per_seg),
            ("per-dim means, range", lambda f: rng(f["summary"]["mean_range"])),
            ("per-dim stds, range", lambda f: rng(f["summary"]["std_range"])),
            ("min / max value", lambda f: f"{_num(f['summary']['min'])} / {_num(f['summary']['max'])}"),
            ("constant dims", lambda f: str(f["summary"]["constant_dims"])),
            ("all-zero rows", lambda f: _num(f["zero_rows"])),
            ("NaN / +inf / -inf set to 0", nonfinite),
        ]
        for label, fn in rows:
            ft.add_row(label, *[fn(f) for f in feats.values()])
        console.print(ft)
    elif info["kind"] not in ("label_csd", "label_csv"):
        console.print("frame features: none")

    text = info.get("text")
    if text:
        wps = text["words_per_segment"]
        words = f"{wps['min']:.0f} / {wps['median']:.0f} / {wps['mean']:.1f} / {wps['max']:.0f}" if wps else "-"
        console.print(f"text: {text['segments_with_text']:,} segments with words, {text['segments_without_text']:,} "
                      f"without, vocabulary {text['vocabulary']:,}")
        console.print(f"      words per segment min / median / mean / max: {words}")

    elif info["kind"] == "csd_folder":
        console.print("text: none (no words file)")

    lines = _problem_lines(info)
    console.print("problems: " + ("none" if not lines else ""))
    for line in lines:
        console.print(f"  - {line}")


def _problem_lines(info: dict[str, Any]) -> list[str]:
    p = info.get("problems") or {}
    out = []
    if p.get("missing_files"):
        out.append(f"missing files (modality absent): {', '.join(p['missing_files'])}")
    if p.get("unused_files"):
        out.append(f".csd files not read: {', '.join(p['unused_files'])} (name them with data.files.words/audio/vision)")
    for k, n in (p.get("videos_missing_from") or {}).items():
        if n and k not in (p.get("missing_files") or []):
            out.append(f"{n} video(s) absent from the {k} file")
    if p.get("segments_without_words"):
        out.append(f"{p['segments_without_words']} segment(s) without words")
    if p.get("zero_length_segments"):
        out.append(f"{p['zero_length_segments']} zero-length segment(s) (end = start; kept, no words or frames), "
                   f"e.g. {', '.join(p.get('zero_length_examples', [])[:3])}")
    for key, what in (("words_without_frames", "word row(s) without {m} frames (zero rows)"),
                      ("segments_without_frames", "segment(s) without {m} frames")):
        for m, n in (p.get(key) or {}).items():
            if n and m not in (p.get("missing_files") or []):
                out.append(f"{n} " + what.format(m=m))
    for group, reasons in (p.get("skipped") or {}).items():
        for reason, n in reasons.items():
            out.append(f"skipped {n} {group}: {reason}")
    for f, entries in (p.get("invalid_entries") or {}).items():
        if isinstance(entries, dict):
            sample = "; ".join(f"{v}: {r}" for v, r in list(entries.items())[:3])
            out.append(f"{len(entries)} invalid entr{'y' if len(entries) == 1 else 'ies'} in {f} ({sample})")
        else:
            out.append(f"invalid entry {f}: {entries}")
    if p.get("unknown_fold_ids"):
        out.append(f"{p['unknown_fold_ids']} fold video id(s) not in the data, e.g. "
                   f"{', '.join(p.get('unknown_fold_examples', [])[:3])}")
    if p.get("videos_not_in_folds"):
        out.append(f"{p['videos_not_in_folds']} video(s) in no fold (not loaded)")
    for key in ("empty_text", "skipped_empty_text", "skipped_other_folds", "lengths_clipped"):
        if p.get(key):
            out.append(f"{key.replace('_', ' ')}: {p[key]}")
    return out


def _render_feature_file(info: dict[str, Any], console, Table) -> None:
    cov = info["videos_per_fold"]
    rpv, spv = info["rows_per_video"], info["seconds_per_video"]
    table = Table(title=f"root group '{info['root_name']}'", title_justify="left", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("videos", _num(info["videos"]))
    table.add_row("videos in train / valid / test / no fold",
                  f"{cov['train']} / {cov['valid']} / {cov['test']} / {cov['not_in_folds']}")
    table.add_row("rows", _num(info["rows"]))
    if rpv:
        table.add_row("rows per video min / median / max", f"{rpv['min']:,.0f} / {rpv['median']:,.0f} / {rpv['max']:,.0f}")
    if spv:
        table.add_row("seconds per video median", f"{spv['median']:.1f}")
    table.add_row("rows per second (median)", _num(info["rows_per_second"], 1))
    if "words" in info:
        w = info["words"]
        table.add_row("tokens / 'sp' silences", f"{w['tokens']:,} / {w['silence_tokens']:,}")
        table.add_row("vocabulary (spoken)", _num(w["vocabulary"]))
    f = info.get("features")
    if f:
        s, nf = f["summary"], f["nonfinite"]
        table.add_row("dimensions", str(f["dim"]), end_section=False)
        table.add_row("per-dim means, range (finite values)",
                      f"{s['mean_range'][0]:.2f} .. {s['mean_range'][1]:.2f}" if s["mean_range"] else "-")
        table.add_row("per-dim stds, range", f"{s['std_range'][0]:.2f} .. {s['std_range'][1]:.2f}" if s["std_range"] else "-")
        table.add_row("min / max value", f"{_num(s['min'])} / {_num(s['max'])}")
        table.add_row("constant dims", str(s["constant_dims"]))
        table.add_row("NaN / +inf / -inf values", f"{nf['nan']:,} / {nf['posinf']:,} / {nf['neginf']:,}")
    console.print(table)
    lines = _problem_lines(info)
    console.print("problems: " + ("none" if not lines else ""))
    for line in lines:
        console.print(f"  - {line}")


# ----------------------------------------------------------------------------------------------
# figure


def plot_labels(info: dict[str, Any], out: str | os.PathLike) -> Path:
    """Bar chart of the rounded labels, one panel per split, with counts on the bars."""
    if "labels" not in info:
        raise MmsentiError(f"{info['path']}: --plot draws label histograms, and this {info['kind']} has no labels")
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = Path(out)
    if out.is_dir() or str(out).endswith(os.sep):
        out = out / f"{Path(info['name']).stem}_labels.png"
    if not out.suffix:
        out = out.with_suffix(".png")
    splits = [s for s in info["splits"] if s != "all" and info["splits"][s]["segments"]] or ["all"]
    bins = info["labels"]["bins"]
    colours = plt.get_cmap("RdYlGn")(np.linspace(0.08, 0.92, len(bins)))
    fig, axes = plt.subplots(1, len(splits), figsize=(max(4.2 * len(splits) + 0.6, 6.5), 4.6), squeeze=False)
    for ax, s in zip(axes[0], splits):
        lab = info["labels"][s]
        counts = lab["histogram"]
        bars = ax.bar(bins, counts, color=colours, edgecolor="#333333", linewidth=0.6, width=0.8)
        total = max(sum(counts), 1)
        ax.bar_label(bars, labels=[f"{c}\n{100 * c / total:.0f}%" if c else "0" for c in counts],
                     fontsize=8, padding=2)
        ax.set_ylim(0, max(max(counts), 1) * 1.25)
        ax.set_xticks(bins, [f"{b:+d}" if b else "0" for b in bins])
        ax.set_xlabel("sentiment label, rounded (-3 very negative ... +3 very positive)", fontsize=8.5)
        ax.set_ylabel("segments")
        videos = info["splits"][s]["videos"]
        moments = f"mean {lab['mean']:+.2f}, std {lab['std']:.2f}" if lab["n"] else "no labelled segments"
        ax.set_title(f"{s}: {lab['n']:,} segments, {videos:,} videos\n{moments}", fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    src = info.get("folds_source")
    folds = "" if not src else ("(SDK standard folds)" if src == "sdk" else f"(folds: {Path(src).name})")
    folds = ("\n" if len(splits) == 1 else "  ") + folds if folds else ""
    fig.suptitle(f"{info['name']}: sentiment labels per split{folds}", fontsize=12, fontweight="bold")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
