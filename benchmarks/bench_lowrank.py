"""Low-rank factorisation benchmark: the same model dense vs low-rank, each as ORT fp32 and ORT INT8.

The real measurement (a quiet machine; trains the fused model when ``--ckpt`` is not given, then
for each energy / budget factorises it and fine-tunes ``--finetune-epochs`` from the trained weights)::

    python benchmarks/bench_lowrank.py --energies 0.9,0.8,0.7 --finetune-epochs 2 --threads 1 --runs 500 \\
        --out experiments/lowrank/bench.json
    python benchmarks/bench_lowrank.py --ckpt <mosi_fusion best.ckpt> --energies 0.8 --budgets 0.5 --finetune-epochs 2

Smoke run (a tiny untrained model with one MiniLM layer, one-shot factorisation, 20 timed calls per
engine; the six exports take ~6 minutes on two busy cores; the numbers mean nothing)::

    python benchmarks/bench_lowrank.py --tiny

For each variant — ``dense`` and ``lowrank_e<energy>`` (or ``lowrank_b<budget>``) — one fp32 and one
dynamic-INT8 ONNX export (each parity-checked like every export), then one benchmark run of all
engines (:func:`mmsenti.export.benchmark.run_benchmark`, batch 1, ``--mode`` interleaved or blocks)
and a JSON with, per engine: parameters of the PyTorch model and of the ONNX graph (initializer
elements), ONNX bytes, batch-1 p50/p99 latency, the engine's MOSI metrics on the synthetic test
fold (Non0 Acc-2, MAE, ... as :mod:`mmsenti.metrics` computes them), and ratios against the dense
engine of the same precision and against dense fp32. ``--finetune-epochs 0`` measures the one-shot
factorisation (no recovery fine-tuning). With ``--out X.json`` the benchmark run itself is also written,
whole, as bench JSON (``X_bench.json``, schema ``mmsenti.bench/1``), so that
``mmsenti report experiments/lowrank --pareto`` puts the low-rank engines on the accuracy-latency plot
beside pruning and INT8.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: no spinning OpenMP workers
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRICS = ("Non0_acc_2", "Non0_F1_score", "Has0_acc_2", "Mult_acc_7", "MAE", "Corr")


def log(msg: str) -> None:
    print(f"[bench_lowrank {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def train_run(overrides: list[str], log_dir: Path, experiment: str = "mosi_fusion") -> Path:
    """``train.py experiment=<experiment> <overrides>``; returns the run's best checkpoint (from its metrics.json)."""
    before = set(log_dir.glob(f"{experiment}/runs/*"))
    cmd = [sys.executable, str(ROOT / "train.py"), f"experiment={experiment}", f"paths.log_dir={log_dir}", "logger=csv",
           "extras.print_config=false", *overrides]
    log("training: " + " ".join(cmd[2:]))
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"training failed:\n{result.stderr[-3000:]}")
    run = max(set(log_dir.glob(f"{experiment}/runs/*")) - before, key=lambda p: p.stat().st_mtime)
    return Path(json.loads((run / "metrics.json").read_text())["best_ckpt"])


def onnx_params(path: Path) -> int:
    """Elements of every initializer of the graph (weights as the engine stores them)."""
    import onnx
    from onnx import numpy_helper

    return int(sum(numpy_helper.to_array(t).size for t in onnx.load(str(path)).graph.initializer))


def tiny_model_and_data(workdir: Path):
    """A small untrained fused model (one MiniLM layer, MulT d_model 32) and the small synthetic MOSI set: the smoke run."""
    import torch

    from mmsenti.data.datamodule import SentimentDataModule
    from mmsenti.data.synthetic import write_synthetic_mosi
    from mmsenti.models import SentimentModel, SentimentModelConfig

    root = write_synthetic_mosi(workdir / "data", scale="small", seed=0)
    dm = SentimentDataModule(source="synthetic", root=str(root), scale="small", batch_size=16)
    dm.prepare_data()
    dm.setup("fit")
    torch.manual_seed(0)
    cfg = SentimentModelConfig(
        text_encoder={"pretrained": "minilm_l6", "keep_layers": [0], "finetune": "full"},  # one layer: a quick export
        fusion={"name": "mult", "d_model": 32, "num_layers": 1, "num_heads": 4},
        audio_encoder={"name": "conv_transformer", "input_dim": dm.feature_dims["audio"], "d_model": 32, "num_heads": 4},
        vision_encoder={"name": "conv_transformer", "input_dim": dm.feature_dims["vision"], "d_model": 32, "num_heads": 4})
    return SentimentModel(cfg, pretrained_weights=False).eval(), dm


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="the dense (fused) checkpoint (default: train experiment=mosi_fusion)")
    ap.add_argument("--experiment", default="mosi_fusion", help="the experiment of the dense model (and of its fine-tuning runs)")
    ap.add_argument("--epochs", type=int, default=8, help="epochs when the dense model is trained here")
    ap.add_argument("--energies", default="0.9,0.8", help="retained spectral energies, comma-separated ('' for none)")
    ap.add_argument("--budgets", default="", help="global parameter budgets (fractions of the in-scope weights kept)")
    ap.add_argument("--include", default="", help="compression.include patterns, comma-separated (default: the config's)")
    ap.add_argument("--finetune-epochs", type=int, default=1,
                    help="recovery fine-tuning after factorising (train.py compression=lowrank compression.init_from=<ckpt>); 0 = one-shot")
    ap.add_argument("--engines", default=str(ROOT / "export" / "bench_lowrank"), help="where the exports go (git-ignored)")
    ap.add_argument("--logs", default=str(ROOT / "logs" / "bench_lowrank"), help="training runs")
    ap.add_argument("--out", help="write the JSON here too")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=300, help="timed calls per engine at batch 1")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--mode", default="blocks", choices=["blocks", "interleaved"],
                    help="blocks: each engine timed on its own (single-stream); interleaved: round-robin")
    ap.add_argument("--tiny", action="store_true", help="smoke run: tiny untrained model, one-shot factorisation, few runs")
    args = ap.parse_args()

    from mmsenti.export.commands import _quiet_libraries, datamodule_from_checkpoint

    _quiet_libraries()
    import torch

    from mmsenti.compression.lowrank import DEFAULT_INCLUDE, factorise, low_rank_report
    from mmsenti.export.benchmark import engine_variant, run_benchmark
    from mmsenti.export.pipeline import ExportOptions, checkpoint_source, export_model
    from mmsenti.io import write_json_atomic
    from mmsenti.models.checkpoint import load_sentiment_checkpoint

    energies = [float(x) for x in args.energies.split(",") if x.strip()]
    budgets = [float(x) for x in args.budgets.split(",") if x.strip()]
    include = [p.strip() for p in args.include.split(",") if p.strip()] or list(DEFAULT_INCLUDE)
    settings = [(f"lowrank_e{e:g}", {"energy": e}) for e in energies] + [(f"lowrank_b{b:g}", {"budget": b}) for b in budgets]
    if not settings:
        ap.error("nothing to compare: give --energies or --budgets")
    engines, logs = Path(args.engines), Path(args.logs)
    scratch = None
    if args.tiny:
        scratch = tempfile.TemporaryDirectory(prefix="bench_lowrank_")
        engines = Path(scratch.name) / "engines"
        args.runs, args.warmup, args.seq, args.frames, args.finetune_epochs = min(args.runs, 20), min(args.warmup, 3), 16, 20, 0
        torch.set_num_threads(1)  # the SVDs: LAPACK on shared cores is several times slower threaded
        dense, dm = tiny_model_and_data(Path(scratch.name))
        ckpt = None
    else:
        ckpt = Path(args.ckpt) if args.ckpt else train_run([f"trainer.max_epochs={args.epochs}"], logs, args.experiment)
        loaded = load_sentiment_checkpoint(ckpt)
        dense, dm = loaded.model, datamodule_from_checkpoint(loaded.data_config)

    models: dict[str, tuple] = {"dense": (dense, ckpt, {})}
    for name, how in settings:
        if args.finetune_epochs > 0 and ckpt is not None:
            key = "energy" if "energy" in how else "budget"
            tuned = train_run(["compression=lowrank", f"compression.{key}={how[key]}", f"compression.init_from={ckpt}",
                               f"compression.include=[{','.join(include)}]", f"trainer.max_epochs={args.finetune_epochs}"],
                              logs, args.experiment)
            model = load_sentiment_checkpoint(tuned).model
            report = low_rank_report(model)
            models[name] = (model, tuned, {"finetune_epochs": args.finetune_epochs, "ranks": report["ranks"]})
        else:
            model = copy.deepcopy(dense)
            started = time.perf_counter()
            report = factorise(model, include=include, **({"energy": None} if "budget" in how else {}), **how)
            models[name] = (model.eval(), ckpt, {"finetune_epochs": 0, "ranks": report["ranks"],
                                                 "factorise_seconds": round(time.perf_counter() - started, 1)})
        log(f"{name}: {len(models[name][2]['ranks'])} layers factorised")

    rows: dict[str, dict] = {}
    for name, (model, source_ckpt, info) in models.items():
        for precision in ("fp32", "int8"):
            folder = engines / f"{name}_{precision}"
            log(f"exporting {folder.name}")
            manifest = export_model(model, folder, ExportOptions(precision=precision, overwrite=True), datamodule=dm,
                                    source=checkpoint_source(source_ckpt) if source_ckpt else {"checkpoint": None})
            test = manifest["metrics"]["engine"].get("test") or manifest["metrics"]["engine"].get("val") or {}
            rows[f"{name}_{precision}"] = {
                "model": name, "precision": precision, "folder": str(folder),
                "params": int(sum(p.numel() for p in model.parameters())),
                "onnx_params": onnx_params(folder / manifest["onnx"]), "onnx_bytes": int(manifest["size_bytes"]),
                "parity_max_abs_diff": manifest["parity"]["max_abs_diff"], "parity_passed": manifest["parity"]["passed"],
                "test_metrics": {k: test.get(k) for k in METRICS if k in test},
                "layers_factorised": len(info.get("ranks", {})), **{k: v for k, v in info.items() if k != "ranks"}}

    variants = [engine_variant(rows[n]["folder"], args.threads, args.seq, args.frames, name=n) for n in rows]
    log(f"timing {len(variants)} engines at batch 1 ({args.mode}, {args.threads} thread(s), {args.runs} runs)")
    bench = run_benchmark(variants, [1], runs=args.runs, warmup=args.warmup, threads=args.threads, seq=args.seq,
                          frames=args.frames, reference="dense_fp32", min_runs=min(20, args.runs), mode=args.mode)
    timing = {r["variant"]: r for r in bench["results"] if r["batch"] == 1}
    for n, row in rows.items():
        row["p50_ms"], row["p99_ms"] = timing[n]["p50_ms"], timing[n]["p99_ms"]
    for n, row in rows.items():
        same = rows[f"dense_{row['precision']}"]
        row["vs_dense_same_precision"] = {
            "p50_speedup": same["p50_ms"] / row["p50_ms"], "p99_speedup": same["p99_ms"] / row["p99_ms"],
            "params_ratio": row["onnx_params"] / same["onnx_params"], "bytes_ratio": row["onnx_bytes"] / same["onnx_bytes"],
            "delta": {k: (row["test_metrics"][k] - same["test_metrics"][k]) for k in row["test_metrics"]
                      if k in same["test_metrics"] and row["test_metrics"][k] is not None and same["test_metrics"][k] is not None}}
        row["p50_speedup_vs_dense_fp32"] = rows["dense_fp32"]["p50_ms"] / row["p50_ms"]
    result = {"schema": "mmsenti.bench_lowrank/1", "checkpoint": str(ckpt) if ckpt else None, "tiny": bool(args.tiny),
              "split": "test" if dm is not None else None, "include": include, "settings": dict(settings),
              "finetune_epochs": args.finetune_epochs, "engines": rows,
              "bench": {k: bench[k] for k in ("hardware", "settings", "versions", "created")}}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        write_json_atomic(Path(args.out), result)
        write_json_atomic(Path(args.out).with_name(Path(args.out).stem + "_bench.json"), bench)  # for report --pareto
    if scratch is not None:
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
