"""Compression and deployment benchmark: engines vs PyTorch-native baselines, accuracy drift, Pareto report.

    python benchmarks/bench_engines.py                                  # trains what it needs (~30 min on 2 cores)
    python benchmarks/bench_engines.py --ckpt A.ckpt --pruned-ckpt B.ckpt [--student-ckpt C.ckpt]
    python benchmarks/bench_engines.py --reuse                          # re-time existing exports only

1. Checkpoints: the fused model (``experiment=mosi_fusion``) and the structurally pruned one
   (``experiment=mosi_prune compression.init_from=<fused>``: the trained model pruned to 20%, then
   40% of FFN neurons over two fine-tuning epochs) — trained on the synthetic CMU-MOSI-shaped set
   when not given. ``--student-ckpt`` adds a text-only (distilled)
   student.
2. Exports (``export/bench/``, git-ignored): fused fp32 / INT8 dynamic / INT8 static, the
   text-only graph fp32 / INT8, the pruned model fp32 / INT8 — each parity-checked against PyTorch,
   with MOSI metrics of engine and PyTorch on valid and test (accuracy drift).
3. One interleaved benchmark in one process (batch 1, 8, 64; 32 tokens, 50 audio/vision frames;
   ORT spinning off, torch OMP passive), PyTorch eager for the fused, text-only and pruned models,
   and the PyTorch-native options a user would try first on the fused model (``--native``,
   default ``compile,bf16``): ``compile_fused`` (``torch.compile``, default mode; compile seconds
   reported apart, outside the timed window — minutes per batch size on 2 cores) and
   ``bf16_fused`` (CPU bf16 autocast, with its score deviation from fp32). ``best_native`` names
   the fastest of eager/compile/bf16; every ratio is against eager and against it.
4. Single-stream latency: the same variants timed **each on its own** (blocks, as a deployment
   runs one model) at 1 and at 2 threads, batch 1 (and batch 64 at 2 threads). The batch-1
   targets use each variant's better thread count — eager, compile and bf16 included — and say
   which it was; the INT8 target is against the best PyTorch-native variant as well as eager.
5. A batch-64 ablation of ORT fp32 settings (threads, graph optimisation level, spinning), each
   setting timed in its own block — the question why ORT fp32 lost to eager at batch 64 before.
6. ``experiments/engines/bench.json`` + ``summary.json`` (targets met/missed with the numbers),
   then ``mmsenti report experiments/engines --pareto`` (``pareto.md``, ``pareto.png``).

Prints the summary JSON. Timings come from a shared 2-core machine: compare within one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: no spinning OpenMP workers
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRAIN_DEFAULTS = ["logger=csv", "extras.print_config=false"]


def log(msg: str) -> None:
    print(f"[bench_engines {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def train_checkpoint(experiment: str, overrides: list[str], log_dir: Path) -> Path:
    """Run train.py and return the run's best checkpoint (from its metrics.json)."""
    before = set(log_dir.glob(f"{experiment}/runs/*"))
    cmd = [sys.executable, str(ROOT / "train.py"), f"experiment={experiment}", f"paths.log_dir={log_dir}", *TRAIN_DEFAULTS, *overrides]
    log("training: " + " ".join(cmd[2:]))
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"training failed:\n{result.stderr[-3000:]}")
    run = max(set(log_dir.glob(f"{experiment}/runs/*")) - before, key=lambda p: p.stat().st_mtime)
    best = json.loads((run / "metrics.json").read_text())["best_ckpt"]
    return Path(best)


def export(model, ckpt: Path, datamodule, out: Path, reuse: bool, **options) -> dict:
    from mmsenti.runtime.manifest import read_manifest
    from mmsenti.export.pipeline import ExportOptions, checkpoint_source, export_model

    if reuse and (out / "manifest.json").is_file():
        log(f"reusing {out}")
        return read_manifest(out)
    log(f"exporting {out.name} ({options})")
    return export_model(model, out, ExportOptions(overwrite=True, **options), datamodule=datamodule, source=checkpoint_source(ckpt))


def eager_metrics(manifest: dict) -> dict:
    """PyTorch's MOSI metrics, as measured beside the engine during its export."""
    return {split: d["pytorch"] for split, d in manifest["parity"].get("metrics", {}).items()}


def ablation_batch64(folder: Path, threads: int, seq: int, frames: int, runs: int) -> list[dict]:
    """ORT fp32 at batch 64 under different session settings, each timed in its own block."""
    from mmsenti.export.benchmark import engine_variant, stats, time_interleaved

    settings = [("2 threads, ORT_ENABLE_ALL, no spin (ours)", dict(threads=threads, optimization="all", spin=False)),
                ("2 threads, ORT_ENABLE_BASIC, no spin", dict(threads=threads, optimization="basic", spin=False)),
                ("2 threads, ORT_DISABLE_ALL, no spin", dict(threads=threads, optimization="none", spin=False)),
                ("2 threads, ORT_ENABLE_ALL, spinning", dict(threads=threads, optimization="all", spin=True)),
                ("1 thread, ORT_ENABLE_ALL", dict(threads=1, optimization="all", spin=False))]
    rows = []
    for label, kw in settings:
        v = engine_variant(folder, kw["threads"], seq, frames, spin=kw["spin"], optimization=kw["optimization"])
        t = time_interleaved({label: v.prepare(64)}, runs, 3)[label]
        rows.append({"setting": label, **kw, **stats(t, 64)})
        del v
    return rows


def fused_natives(model, threads: int, args, info: dict | None = None) -> list:
    """eager_fused plus the ``--native`` options (compile_fused, bf16_fused), one group: the baselines."""
    from mmsenti.export.benchmark import native_variants

    return native_variants(model, threads, args.seq, args.frames, kinds=["eager", *args.native], names="{kind}_fused", info=info)


def single_stream(models: dict, engines: Path, names: list[str], args) -> dict[str, dict]:
    """Each variant timed on its own (blocks) at 1 thread (batch 1) and ``args.threads`` (batch 1 and 64)."""
    from mmsenti.export.benchmark import eager_variant, engine_variant, run_benchmark

    runs = {}
    for threads, batches in ((1, [1]), (args.threads, [1, 64])):
        variants = fused_natives(models["eager_fused"], threads, args)
        variants += [eager_variant(model, threads, args.seq, args.frames, name=name) for name, model in models.items()
                     if name != "eager_fused"]
        variants += [engine_variant(engines / n, threads, args.seq, args.frames, name=f"ort_{n}") for n in names]
        log(f"single-stream blocks, {threads} thread(s), batches {batches}")
        runs[str(threads)] = run_benchmark(variants, batches, runs=args.runs, warmup=30, threads=threads, seq=args.seq,
                                           frames=args.frames, reference="eager_fused", mode="blocks")
        del variants
    return runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="fused checkpoint (default: train experiment=mosi_fusion)")
    ap.add_argument("--pruned-ckpt", help="structurally pruned checkpoint (default: train experiment=mosi_prune)")
    ap.add_argument("--student-ckpt", help="optional text-only (distilled) student checkpoint")
    ap.add_argument("--epochs", type=int, default=4, help="epochs for the checkpoints trained here")
    ap.add_argument("--engines", default=str(ROOT / "export" / "bench"), help="where the exports go (git-ignored)")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "engines"), help="bench.json, summary.json, pareto.*")
    ap.add_argument("--logs", default=str(ROOT / "logs" / "bench_engines"), help="training runs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=300, help="timed runs at batch 1")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--reuse", action="store_true", help="reuse existing exports (and the checkpoints they name)")
    ap.add_argument("--no-static", action="store_true", help="skip the static (Q/DQ) INT8 export")
    ap.add_argument("--native", default="compile,bf16",
                    help="PyTorch-native baselines beside eager on the fused model: compile, bf16 (comma-separated; '' for none)")
    ap.add_argument("--summary-only", action="store_true", help="re-derive summary.json and the report from bench.json")
    args = ap.parse_args()
    args.native = [k.strip() for k in args.native.split(",") if k.strip()]
    if unknown := [k for k in args.native if k not in ("compile", "bf16")]:
        ap.error(f"--native {unknown}: choose from compile, bf16")

    from mmsenti.export.commands import _quiet_libraries, datamodule_from_checkpoint, parse_batches

    _quiet_libraries()
    from mmsenti.export.benchmark import eager_variant, engine_variant, run_benchmark
    from mmsenti.io import write_json_atomic
    from mmsenti.runtime.manifest import read_manifest
    from mmsenti.models.checkpoint import load_sentiment_checkpoint

    engines, out, logs = Path(args.engines), Path(args.out), Path(args.logs)
    out.mkdir(parents=True, exist_ok=True)
    batches = parse_batches(args.batches)
    if args.summary_only:
        report = json.loads((out / "bench.json").read_text())
        manifests = {v["name"][len("ort_"):]: read_manifest(v["path"]) for v in report["variants"] if v["name"].startswith("ort_")}
        return finish(report, manifests, out)

    def ckpt_from(existing: str | None, folder: str, experiment: str, overrides: list[str]) -> Path:
        if existing:
            return Path(existing)
        if args.reuse and (engines / folder / "manifest.json").is_file():
            src = read_manifest(engines / folder)["source"].get("checkpoint")
            if src and Path(src).is_file():
                return Path(src)
        return train_checkpoint(experiment, [f"trainer.max_epochs={args.epochs}", *overrides], logs)  # later max_epochs wins

    fused_ckpt = ckpt_from(args.ckpt, "fused_fp32", "mosi_fusion", [])
    # prune the trained fused model (20% then 40% of FFN neurons) and fine-tune it for two epochs
    pruned_ckpt = ckpt_from(args.pruned_ckpt, "pruned_fp32", "mosi_prune",
                            [f"compression.init_from={fused_ckpt}", "compression.epochs=[0,1]", "trainer.max_epochs=2"])

    loaded = load_sentiment_checkpoint(fused_ckpt)
    fused = loaded.model
    dm = datamodule_from_checkpoint(loaded.data_config)
    pruned = load_sentiment_checkpoint(pruned_ckpt).model

    m = {}
    m["fused_fp32"] = export(fused, fused_ckpt, dm, engines / "fused_fp32", args.reuse)
    m["fused_int8"] = export(fused, fused_ckpt, dm, engines / "fused_int8", args.reuse, precision="int8")
    if not args.no_static:  # static INT8 drifts more: held to its own parity bound (onnx_export.STATIC_INT8_TOLERANCE)
        m["fused_int8_static"] = export(fused, fused_ckpt, dm, engines / "fused_int8_static", args.reuse, precision="int8",
                                        quantization="static", calibration_method="percentile")
    m["text_fp32"] = export(fused, fused_ckpt, dm, engines / "text_fp32", args.reuse, variant="text_only")
    m["text_int8"] = export(fused, fused_ckpt, dm, engines / "text_int8", args.reuse, variant="text_only", precision="int8")
    m["pruned_fp32"] = export(pruned, pruned_ckpt, dm, engines / "pruned_fp32", args.reuse)
    m["pruned_int8"] = export(pruned, pruned_ckpt, dm, engines / "pruned_int8", args.reuse, precision="int8")
    if args.student_ckpt:  # speed of the distilled text-only fast path; its accuracy belongs to its own data/report
        student = load_sentiment_checkpoint(args.student_ckpt).model
        m["student_fp32"] = export(student, Path(args.student_ckpt), None, engines / "student_fp32", args.reuse,
                                   variant="text_only", metrics=False)
        m["student_int8"] = export(student, Path(args.student_ckpt), None, engines / "student_int8", args.reuse,
                                   variant="text_only", precision="int8", metrics=False)

    from mmsenti.export.pipeline import prepare_model

    pruned_shrunk, _ = prepare_model(pruned)  # eager runs the physically smaller model too
    variants = [
        *fused_natives(fused, args.threads, args, info={"metrics": eager_metrics(m["fused_fp32"]), "path": str(fused_ckpt)}),
        eager_variant(fused, args.threads, args.seq, args.frames, name="eager_text", variant="text_only",
                      info={"metrics": eager_metrics(m["text_fp32"])}),
        eager_variant(pruned_shrunk, args.threads, args.seq, args.frames, name="eager_pruned",
                      info={"metrics": eager_metrics(m["pruned_fp32"]), "path": str(pruned_ckpt)}),
    ]
    variants += [engine_variant(engines / name, args.threads, args.seq, args.frames, name=f"ort_{name}") for name in m]
    log(f"timing {len(variants)} variants at batches {batches}")
    report = run_benchmark(variants, batches, runs=args.runs, warmup=30, threads=args.threads, seq=args.seq,
                           frames=args.frames, reference="eager_fused")
    stream_names = [n for n in m if n not in ("fused_int8_static", "text_fp32")]
    report["single_stream"] = single_stream({"eager_fused": fused, "eager_pruned": pruned_shrunk}, engines, stream_names, args)
    log("batch-64 ablation of ORT fp32 settings")
    report["ablation_batch64_ort_fp32"] = ablation_batch64(engines / "fused_fp32", args.threads, args.seq, args.frames, 15)
    write_json_atomic(out / "bench.json", report)
    return finish(report, m, out)


def finish(report: dict, manifests: dict, out: Path) -> int:
    from mmsenti.io import write_json_atomic
    from mmsenti.export.report import pareto_report

    summary = summarize(report, manifests)
    result = pareto_report(out)
    def rel(path: str | None) -> str | None:
        return str(Path(path).resolve().relative_to(ROOT)) if path and Path(path).resolve().is_relative_to(ROOT) else path

    summary["report"] = {"markdown": rel(result["markdown"]), "png": rel(result["png"]), "front": result["front"]}
    write_json_atomic(out / "summary.json", summary)
    print(json.dumps(summary, indent=2))
    return 0


def summarize(report: dict, manifests: dict) -> dict:
    """The issue's targets, each with its measured numbers and met / missed."""
    res = {(r["variant"], r["batch"]): r for r in report["results"]}

    def lat(name: str, batch: int = 1) -> dict:
        r = res.get((name, batch))
        return {"p50_ms": round(r["p50_ms"], 3), "p99_ms": round(r["p99_ms"], 3), "throughput_per_s": round(r["throughput_per_s"], 1)} if r else {}

    def ratio(a: str, b: str, key: str, batch: int = 1) -> float | None:
        ra, rb = res.get((a, batch)), res.get((b, batch))
        return round(ra[key] / rb[key], 2) if ra and rb else None

    def drift(name: str) -> dict:
        d = manifests[name]["parity"].get("metrics", {})
        return {split: {"Non0_acc_2_pt": round(100 * v["drift"]["Non0_acc_2"], 2), "MAE": round(v["drift"]["MAE"], 4),
                        "sign_changes": v["sign_changes"], "n": v["n"]} for split, v in d.items()}

    def acc(name: str, who: str = "engine") -> dict:
        d = manifests[name]["parity"].get("metrics", {})
        return {split: {"Non0_acc_2": round(100 * v[who]["Non0_acc_2"], 2), "MAE": round(v[who]["MAE"], 4)} for split, v in d.items()}

    # single-stream (each variant on its own) batch-1 figures, at each variant's better thread count
    stream = {(r["variant"], r["batch"], int(threads)): r for threads, sub in report.get("single_stream", {}).items()
              for r in sub["results"]}

    def best(name: str, batch: int = 1) -> dict:
        rows = [(t, r) for (n, b, t), r in stream.items() if n == name and b == batch]
        if not rows:
            return {}
        t, r = min(rows, key=lambda tr: tr[1]["p99_ms"])
        return {"threads": t, "p50_ms": round(r["p50_ms"], 3), "p99_ms": round(r["p99_ms"], 3),
                "throughput_per_s": round(r["throughput_per_s"], 1)}

    def speedup(ref: dict, other: dict, key: str) -> float | None:
        return round(ref[key] / other[key], 2) if ref and other else None

    targets = {}
    eager, int8, pruned8 = best("eager_fused"), best("ort_fused_int8"), best("ort_pruned_int8")
    sp99 = speedup(eager, int8, "p99_ms")
    targets["fused_int8_p99_le_3ms_and_3x_eager"] = {
        "how": "single stream: each variant timed on its own at batch 1, its better of 1 and 2 threads",
        "eager": eager, "ort_int8": int8, "speedup_p50": speedup(eager, int8, "p50_ms"), "speedup_p99": sp99,
        "interleaved_2_threads": {"eager": lat("eager_fused"), "ort_int8": lat("ort_fused_int8"),
                                  "speedup_p99": ratio("eager_fused", "ort_fused_int8", "p99_ms")},
        "pruned_40pct_ffn_int8": {**pruned8, "speedup_p99": speedup(eager, pruned8, "p99_ms")},
        "met": bool(int8 and int8["p99_ms"] <= 3.0 and (sp99 or 0) >= 3.0),
        "met_with_pruning": bool(pruned8 and pruned8["p99_ms"] <= 3.0 and (speedup(eager, pruned8, "p99_ms") or 0) >= 3.0)}
    targets["fused_int8_p99_le_3ms_and_3x_best_native"] = native_target(report)
    fp32 = best("ort_fused_fp32")
    f50 = speedup(eager, fp32, "p50_ms")
    targets["fused_fp32_ge_1.6x_eager"] = {"ort_fp32": fp32, "speedup_p50": f50, "speedup_p99": speedup(eager, fp32, "p99_ms"),
                                           "interleaved_2_threads_speedup_p50": ratio("eager_fused", "ort_fused_fp32", "p50_ms"),
                                           "met": bool((f50 or 0) >= 1.6)}
    text_name = "ort_student_int8" if ("ort_student_int8", 1) in res else "ort_text_int8"
    t = best(text_name)
    targets["text_only_int8_p99_le_1.5ms"] = {"variant": text_name, **t, "interleaved_2_threads": lat(text_name),
                                              "met": bool(t and t["p99_ms"] <= 1.5),
                                              "note": "distilled student" if "student" in text_name else
                                              "MiniLM-L6 text-only graph (no distilled student given: --student-ckpt)"}
    d = drift("fused_int8")
    val = d.get("val", {})
    targets["int8_drift_le_0.5pt_and_0.02_mae"] = {"dynamic": d, "static": drift("fused_int8_static") if "fused_int8_static" in manifests else None,
                                                   "met": bool(val and abs(val["Non0_acc_2_pt"]) <= 0.5 and abs(val["MAE"]) <= 0.02)}
    b64 = {name: lat(name, 64) for name in ("eager_fused", "ort_fused_fp32", "ort_fused_int8")}
    s64 = {name: best(name, 64) for name in ("eager_fused", "ort_fused_fp32", "ort_fused_int8")}
    s64_ratio = (round(s64["ort_fused_fp32"]["throughput_per_s"] / s64["eager_fused"]["throughput_per_s"], 2)
                 if s64["ort_fused_fp32"] and s64["eager_fused"] else None)
    targets["batch64_ort_throughput_ge_eager"] = {
        **b64, "fp32_ratio": ratio("ort_fused_fp32", "eager_fused", "throughput_per_s", 64),
        "int8_ratio": ratio("ort_fused_int8", "eager_fused", "throughput_per_s", 64),
        "single_stream": s64, "single_stream_fp32_ratio": s64_ratio,
        "ablation": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items() if k in ("setting", "p50_ms", "throughput_per_s")}
                     for row in report.get("ablation_batch64_ort_fp32", [])],
        "met": bool((ratio("ort_fused_fp32", "eager_fused", "throughput_per_s", 64) or 0) >= 1.0 and (s64_ratio or 1.0) >= 1.0)}
    base, pr = acc("fused_fp32"), acc("pruned_fp32")
    loss = {split: round(base[split]["Non0_acc_2"] - pr[split]["Non0_acc_2"], 2) for split in base if split in pr}
    comp = manifests["pruned_fp32"]["compression"]["structured"]
    targets["structured_40pct_ffn_speedup_le_1pt_loss"] = {
        "ffn_neurons": f"{comp['ffn_neurons']} -> {comp['ffn_neurons_after']}", "params": f"{comp['params_before']} -> {comp['params_after']}",
        "ort_fp32_speedup_p50": ratio("ort_fused_fp32", "ort_pruned_fp32", "p50_ms"),
        "ort_int8_speedup_p50": ratio("ort_fused_int8", "ort_pruned_int8", "p50_ms"),
        "eager_speedup_p50": ratio("eager_fused", "eager_pruned", "p50_ms"),
        "ort_fp32_throughput_ratio_b64": ratio("ort_pruned_fp32", "ort_fused_fp32", "throughput_per_s", 64),
        "acc2_loss_pt": loss, "unpruned": base, "pruned": pr,
        "met": bool(loss.get("val") is not None and loss["val"] <= 1.0 and (ratio("ort_fused_fp32", "ort_pruned_fp32", "p50_ms") or 0) > 1.0)}
    sizes = {name: round(man["size_bytes"] / 1e6, 1) for name, man in manifests.items()}
    parity = {name: man["parity"]["max_abs_diff"] for name, man in manifests.items()}
    return {"hardware": report["hardware"], "settings": report["settings"], "targets": targets, "sizes_mb": sizes,
            "parity_max_abs_diff": parity,
            "single_stream_b1": {name: best(name) for name in sorted({n for n, b, _ in stream if b == 1})},
            "latency_b1": {r["variant"]: lat(r["variant"]) for r in report["results"] if r["batch"] == 1},
            "throughput_b64": {r["variant"]: round(r["throughput_per_s"], 1) for r in report["results"] if r["batch"] == 64}}


NATIVES = ("eager_fused", "compile_fused", "bf16_fused")


def stream_best(report: dict, name: str, batch: int = 1) -> dict:
    """Single-stream figures of ``name`` at its lowest-p99 thread count (``{}`` when it did not run)."""
    rows = [(int(t), r) for t, sub in report.get("single_stream", {}).items() for r in sub["results"]
            if r["variant"] == name and r["batch"] == batch]
    if not rows:
        return {}
    t, r = min(rows, key=lambda tr: tr[1]["p99_ms"])
    return {"threads": t, "p50_ms": round(r["p50_ms"], 3), "p99_ms": round(r["p99_ms"], 3),
            "throughput_per_s": round(r["throughput_per_s"], 1)}


def native_target(report: dict, engine: str = "ort_fused_int8") -> dict:
    """Fused INT8 p99 <= 3 ms and >= 3x the best PyTorch-native variant (single stream, batch 1).

    The best native is the lowest p99 of eager, torch.compile and bf16 autocast, each at its better
    thread count; ``met`` is ``None`` (not judged) when only eager ran (a bench.json from before the
    baselines, or ``--native ''``).
    """
    natives = {n: stream_best(report, n) for n in NATIVES if stream_best(report, n)}
    name = min(natives, key=lambda n: natives[n]["p99_ms"]) if natives else None
    native, int8 = natives.get(name, {}), stream_best(report, engine)

    def speedup(key: str) -> float | None:
        return round(native[key] / int8[key], 2) if native and int8 else None

    failed = {n: why for n, why in (report.get("failed") or {}).items() if n in NATIVES}
    for sub in report.get("single_stream", {}).values():
        failed.update({n: why for n, why in (sub.get("failed") or {}).items() if n in NATIVES})
    judged = bool(set(natives) - {"eager_fused"})
    sp99 = speedup("p99_ms")
    out = {"how": "single stream, batch 1, each variant at its better of 1 and 2 threads; best native = lowest p99 of "
                  "eager, torch.compile and bf16 autocast",
           "best_native": name, "natives": natives, "failed": failed, "ort_int8": int8,
           "speedup_p50": speedup("p50_ms"), "speedup_p99": sp99,
           "interleaved_2_threads": {"best_native": (report.get("best_native") or {}).get("batch=1"),
                                     "ort_int8": report.get("ratios", {}).get("batch=1", {}).get(engine)},
           "met": bool(int8 and int8["p99_ms"] <= 3.0 and (sp99 or 0) >= 3.0) if judged else None}
    if not judged:
        out["note"] = "no torch.compile / bf16 baseline ran: not judged (re-run the timings, not --summary-only)"
    return out


if __name__ == "__main__":
    sys.exit(main())
