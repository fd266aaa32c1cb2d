"""Pareto report: accuracy vs p99 latency of every benchmarked variant, from bench JSON files.

``mmsenti report <dir> --pareto`` reads every bench JSON under ``<dir>`` (schema
``mmsenti.bench/1``) and writes ``<dir>/pareto.md`` (a table) and ``<dir>/pareto.png`` (the
scatter with the Pareto front). Accuracy is what each variant's manifest recorded for the engine
(or, for PyTorch eager, what the bench script measured), on the named split.

Every row's speed-up is given against plain eager (``x eager``) and against the best
PyTorch-native variant of the same model (``x best native``: the fastest of eager,
``torch.compile`` and bf16 autocast in that run, named under the table). A bench JSON written
before those baselines existed renders with ``–`` in the best-native columns.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mmsenti.errors import MmsentiError
from mmsenti.export.benchmark import BENCH_SCHEMA, native_candidates, validate_bench

ACCURACY_KEY = "Non0_acc_2"


def load_bench_reports(folder: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    folder = Path(folder)
    if not folder.exists():
        raise MmsentiError(f"{folder}: no such folder")
    files = [folder] if folder.is_file() else sorted(folder.rglob("*.json"))
    reports = []
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            continue
        if isinstance(data, dict) and data.get("schema") == BENCH_SCHEMA:
            reports.append((path, validate_bench(data)))
    if not reports:
        raise MmsentiError(f"{folder}: no bench JSON ({BENCH_SCHEMA}) found; run `mmsenti bench ... --json --out FILE` first")
    return reports


def rows_from(report: dict[str, Any], split: str = "test", latency_batch: int = 1) -> list[dict[str, Any]]:
    """One row per variant: size, latency at ``latency_batch``, throughput per batch, accuracy, and
    p50 speed-ups against eager (``vs_eager``) and the best PyTorch-native variant (``vs_best_native``)."""
    rows = []
    eager, best = baselines(report, latency_batch)
    for v in report["variants"]:
        res = {r["batch"]: r for r in report["results"] if r["variant"] == v["name"]}
        if latency_batch not in res:
            continue
        metrics = v.get("metrics") or {}
        chosen = split if split in metrics else ("val" if "val" in metrics else None)
        m = metrics.get(chosen, {}) if chosen else {}
        rows.append({
            "variant": v["name"], "kind": v.get("kind"), "graph": v.get("variant"), "precision": v.get("precision"),
            "quantization": v.get("quantization"), "size_mb": (v.get("size_bytes") or 0) / 1e6 or None,
            "params": v.get("params"), "p50_ms": res[latency_batch]["p50_ms"], "p99_ms": res[latency_batch]["p99_ms"],
            "throughput": {b: r["throughput_per_s"] for b, r in sorted(res.items())},
            "split": chosen, "accuracy": m.get(ACCURACY_KEY), "mae": m.get("MAE"), "corr": m.get("Corr"),
            "vs_eager": eager["p50_ms"] / res[latency_batch]["p50_ms"] if eager else None,
            "vs_best_native": best["p50_ms"] / res[latency_batch]["p50_ms"] if best else None,
        })
    return rows


def baselines(report: dict[str, Any], batch: int = 1) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(eager row, best PyTorch-native row) at ``batch``; eager is the reference when it is a PyTorch
    variant, best native is ``None`` for a bench JSON without the native baselines."""
    res = {r["variant"]: r for r in report["results"] if r["batch"] == batch}
    kinds = {v["name"]: v.get("kind") for v in report["variants"]}
    ref = report["settings"]["reference"]
    eager = res.get(ref) if kinds.get(ref) == "pytorch" else None
    chosen = (report.get("best_native") or {}).get(f"batch={batch}")
    return eager, (res.get(chosen["variant"]) if chosen else None)


def native_notes(report: dict[str, Any], batch: int = 1) -> list[str]:
    """Markdown lines naming the best PyTorch-native variant, failures, compile seconds and bf16 deviation."""
    chosen = (report.get("best_native") or {}).get(f"batch={batch}")
    if not chosen:
        if any(v.get("native_group") for v in report["variants"]) or report.get("best_native") is not None:
            return ["", f"No PyTorch-native baseline ran at batch {batch}: `x best native` is –."]
        return ["", "This bench JSON predates the PyTorch-native baselines (`torch.compile`, bf16 autocast): its speed-ups "
                    "are against plain eager only (`x best native` –). `python benchmarks/bench_engines.py --reuse` "
                    "re-times the exports with them."]
    by_name = {v["name"]: v for v in report["variants"]}
    lines = ["", f"`x eager` and `x best native`: p50 at batch {batch} against `{report['settings']['reference']}` and against "
                 f"the best PyTorch-native variant, **`{chosen['variant']}`** ({chosen['native']}), the lowest p50 of "
                 f"{', '.join(f'`{n}`' for n in chosen['of'])}."]
    for name in chosen.get("failed") or []:
        lines.append(f"- `{name}` failed: {by_name[name].get('failed')}")
    for v in report["variants"]:
        if v.get("compile_seconds"):
            secs = ", ".join(f"b={b}: {s:.1f} s" for b, s in v["compile_seconds"].items())
            lines.append(f"- `{v['name']}`: compile time (first call per batch size, not timed) {secs}.")
        if v.get("bf16_max_abs_diff"):
            diff = ", ".join(f"b={b}: {d:.2g}" for b, d in v["bf16_max_abs_diff"].items())
            lines.append(f"- `{v['name']}`: max |score − fp32 score| {diff}.")
    return lines


def pareto_front(rows: list[dict[str, Any]]) -> set[str]:
    """Variants no other variant beats on both p99 latency (lower) and accuracy (higher)."""
    pts = [r for r in rows if r["accuracy"] is not None]
    front = set()
    for r in pts:
        dominated = any(o is not r and o["p99_ms"] <= r["p99_ms"] and o["accuracy"] >= r["accuracy"]
                        and (o["p99_ms"] < r["p99_ms"] or o["accuracy"] > r["accuracy"]) for o in pts)
        if not dominated:
            front.add(r["variant"])
    return front


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def markdown(rows: list[dict[str, Any]], front: set[str], report: dict[str, Any], source: Path) -> str:
    hw, st = report["hardware"], report["settings"]
    batches = st["batches"]
    head = ["variant", "graph", "precision", "size MB", "p50 ms (b=1)", "p99 ms (b=1)", "x eager", "x best native",
            *[f"items/s b={b}" for b in batches], f"{ACCURACY_KEY}", "MAE", "split", "Pareto"]
    lines = ["# Accuracy vs latency", "",
             f"Generated by `mmsenti report {_rel(source.parent)} --pareto` from `{source.name}`.", "",
             f"Hardware: {hw['cpu']}, {hw['threads']} threads of {hw['cores_available']} cores, load average "
             f"{_fmt_load(hw.get('load_avg'))} → {_fmt_load(hw.get('load_avg_after'))} (shared machine: compare within this table only). "
             f"Inputs: {st['seq']} tokens, {st['frames']} audio/vision frames; {st['runs']} {'interleaved' if st.get('interleaved', True) else 'single-variant (blocks)'} timed runs at batch 1 "
             f"after {st['warmup']} warm-up; ORT spinning {'on' if st.get('ort_spinning') else 'off'}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: r["p99_ms"]):
        cells = [r["variant"], r["graph"] or "", r["precision"] or "", _fmt(r["size_mb"], 1), _fmt(r["p50_ms"]), _fmt(r["p99_ms"]),
                 _fmt_x(r.get("vs_eager")), _fmt_x(r.get("vs_best_native")),
                 *[_fmt(r["throughput"].get(b), 0) for b in batches],
                 _fmt(r["accuracy"] * 100 if r["accuracy"] is not None else None, 2), _fmt(r["mae"], 4), r["split"] or "–",
                 "✓" if r["variant"] in front else ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"{ACCURACY_KEY} in %, MOSI convention (MMSA): zero labels dropped, sign of prediction vs label."]
    lines += native_notes(report)
    failed = {n: why for n, why in (report.get("failed") or {}).items()
              if n not in ((report.get("best_native") or {}).get("batch=1") or {}).get("failed", [])}
    lines += [f"- `{n}` failed: {why}" for n, why in failed.items()]
    lines += single_stream_table(report.get("single_stream") or {})
    return "\n".join(lines) + "\n"


def single_stream_table(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown lines for ``{threads: bench report}`` timed in blocks (each variant on its own)."""
    if not runs:
        return []
    counts = sorted(runs, key=int)
    rows: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
    for threads in counts:
        for r in runs[threads]["results"]:
            rows.setdefault(r["variant"], {})[(threads, r["batch"])] = r
    best_p99 = {v: min((r["p99_ms"] for (t, b), r in by.items() if b == 1), default=None) for v, by in rows.items()}
    eager = next((sub["settings"]["reference"] for sub in runs.values()
                  if {v["name"]: v.get("kind") for v in sub["variants"]}.get(sub["settings"]["reference"]) == "pytorch"), None)
    natives = {n for sub in runs.values() for n in native_candidates(sub) if best_p99.get(n) is not None}
    best_native = min(natives, key=lambda n: best_p99[n]) if natives else None

    def x(base: str | None, v: str) -> str:
        if base is None or best_p99.get(base) is None or best_p99.get(v) is None:
            return "–"
        return f"{best_p99[base] / best_p99[v]:.2f}x"

    head = ["variant", *[f"p50 / p99 ms b=1, {t} thr" for t in counts], "x eager (p99)", "x best native (p99)",
            *[f"items/s b=64, {t} thr" for t in counts if 64 in runs[t]["settings"]["batches"]]]
    lines = ["", "## Single stream: each variant timed on its own", "",
             "Same inputs, each variant warmed up and timed in its own block (as a deployment runs one model), "
             "at each thread count; no interleaving, so no cache churn between models.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = sorted(rows, key=lambda v: min((r["p99_ms"] for (t, b), r in rows[v].items() if b == 1), default=1e9))
    for v in order:
        cells = [v]
        for t in counts:
            r = rows[v].get((t, 1))
            cells.append(f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}" if r else "–")
        cells += [x(eager, v), x(best_native, v)]
        for t in counts:
            if 64 in runs[t]["settings"]["batches"]:
                r = rows[v].get((t, 64))
                cells.append(f"{r['throughput_per_s']:.0f}" if r else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "`x eager (p99)` / `x best native (p99)`: batch-1 p99 at each variant's better thread count against "
                  f"`{eager or '–'}` and against the best PyTorch-native variant, "
                  + (f"**`{best_native}`** (lowest p99 of {', '.join(f'`{n}`' for n in sorted(natives))})." if best_native
                     else "– (no PyTorch-native baselines in these runs).")]
    return lines


def _fmt_x(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}x"


def _rel(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)


def _fmt_load(load: list[float] | None) -> str:
    return "–" if not load else "/".join(f"{x:.1f}" for x in load)


def plot(rows: list[dict[str, Any]], front: set[str], path: Path, title: str) -> Path | None:
    pts = [r for r in rows if r["accuracy"] is not None]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import ScalarFormatter

    fig, ax = plt.subplots(figsize=(7.0, 4.4), dpi=100)
    offsets = [(5, 5), (5, -11), (5, 15), (5, -21)]  # staggered so neighbouring labels do not overlap
    for i, r in enumerate(sorted(pts, key=lambda r: (round(100 * r["accuracy"]), r["p99_ms"]))):
        on = r["variant"] in front
        ax.scatter(r["p99_ms"], 100 * r["accuracy"], s=40, marker="o" if r["graph"] != "text_only" else "s",
                   color="tab:red" if on else "tab:gray", zorder=3)
        ax.annotate(r["variant"], (r["p99_ms"], 100 * r["accuracy"]), fontsize=7, xytext=offsets[i % len(offsets)],
                    textcoords="offset points", arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.6"})
    fr = sorted((r for r in pts if r["variant"] in front), key=lambda r: r["p99_ms"])
    if len(fr) > 1:
        ax.step([r["p99_ms"] for r in fr], [100 * r["accuracy"] for r in fr], where="post", color="tab:red", lw=1, alpha=0.6)
    ax.margins(y=0.15)  # room for labels above the top point
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("p99 latency at batch 1 (ms, log scale)")
    ax.set_ylabel(f"{ACCURACY_KEY} (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def pareto_report(folder: str | Path, split: str = "test", out: str | Path | None = None) -> dict[str, Any]:
    """Write ``pareto.md`` and ``pareto.png`` for the newest bench JSON under ``folder``."""
    reports = load_bench_reports(folder)
    source, report = max(reports, key=lambda pr: pr[1]["created"])
    rows = rows_from(report, split)
    front = pareto_front(rows)
    target = Path(out) if out else (Path(folder) if Path(folder).is_dir() else Path(folder).parent)
    target.mkdir(parents=True, exist_ok=True)
    md = target / "pareto.md"
    text = markdown(rows, front, report, source)
    png = plot(rows, front, target / "pareto.png", f"mmsenti engines: {ACCURACY_KEY} ({split}) vs p99 latency (interleaved)")
    result = {"markdown": str(md), "png": str(png) if png else None, "source": str(source), "front": sorted(front), "rows": rows}
    stream_rows = single_stream_rows(rows, report.get("single_stream") or {})
    if stream_rows:  # the deployment view: each variant alone, at its better thread count
        stream_front = pareto_front(stream_rows)
        stream_png = plot(stream_rows, stream_front, target / "pareto_single_stream.png",
                          f"mmsenti engines: {ACCURACY_KEY} ({split}) vs p99 latency (single stream, best thread count)")
        if stream_png:
            text += ("\nSingle-stream Pareto front (each variant timed alone at its better thread count): "
                     f"{', '.join(sorted(stream_front))}.\n\n![single stream](pareto_single_stream.png)\n")
            result.update(single_stream_png=str(stream_png), single_stream_front=sorted(stream_front))
    md.write_text(text)
    return result


def single_stream_rows(rows: list[dict[str, Any]], runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with batch-1 latency taken from the single-stream runs (lowest p99 over thread counts)."""
    best: dict[str, dict[str, Any]] = {}
    for threads, sub in runs.items():
        for r in sub["results"]:
            if r["batch"] == 1 and (r["variant"] not in best or r["p99_ms"] < best[r["variant"]]["p99_ms"]):
                best[r["variant"]] = {**r, "threads": int(threads)}
    return [{**row, "p50_ms": best[row["variant"]]["p50_ms"], "p99_ms": best[row["variant"]]["p99_ms"],
             "threads": best[row["variant"]]["threads"]} for row in rows if row["variant"] in best]
