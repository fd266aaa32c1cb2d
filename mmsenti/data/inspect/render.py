"""Text view of ``mmsenti data inspect``: the dict of :func:`~.stats.inspect_path` as rich tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["render_text"]


def _num(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, (int, np.integer)):
        return f"{x:,}"
    return f"{x:.{digits}f}"


def render_text(info: dict[str, Any], console=None) -> None:
    """Print ``info`` (from :func:`~mmsenti.data.inspect.stats.inspect_path`) as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(highlight=False)
    kind_doc = {
        "csd_folder": f"{info.get('dataset', 'CMU-MOSI')} computational sequences",
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
