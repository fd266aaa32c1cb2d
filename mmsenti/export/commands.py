"""``mmsenti export | bench | report`` (wired into :mod:`mmsenti.cli`).

    mmsenti export CKPT --format onnx|tensorrt --variant fused|text_only --precision fp32|fp16|int8 --out export/NAME
    mmsenti export CKPT --format triton --variant text_only --precision int8 --out REPO [--triton-version N]
    mmsenti bench export/NAME [export/OTHER ...] [--against CKPT] --batch 1,8,64 [--json] [--out FILE]
    mmsenti report RUN_DIR [--out DIR] [--segment ID ...]       (a run folder: report.html + PNGs)
    mmsenti report --pareto DIR|BENCH.json [--out DIR]           (bench JSON: pareto.md + pareto.png)

Heavy imports (torch, onnx) happen inside the commands, so ``mmsenti --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from mmsenti.argtypes import positive_int
from mmsenti.errors import MmsentiError
from mmsenti.export import DEFAULT_OPSET, FORMATS, PRECISIONS, VARIANTS
from mmsenti.runtime.manifest import QUANTIZATIONS
from mmsenti.export.triton import DEVICES, TRITON_FORMAT

log = logging.getLogger(__name__)


def add_commands(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="export a checkpoint to an ONNX / TensorRT engine with a manifest",
                        description="Export a trained checkpoint (the same SentimentModel, wrapped) to an engine folder: "
                                    "engine + tokenizer/ + manifest.json, after a parity check against PyTorch.")
    ex.add_argument("ckpt", help="Lightning checkpoint (.ckpt) written by train.py")
    ex.add_argument("--format", default="onnx", choices=(*FORMATS, TRITON_FORMAT),
                    help="triton: the ONNX export laid out as a Triton Inference Server model repository at --out (docs/triton.md)")
    ex.add_argument("--variant", default="fused", choices=VARIANTS, help="fused: text+audio+vision inputs; text_only: token inputs only")
    ex.add_argument("--precision", default="fp32", choices=PRECISIONS)
    ex.add_argument("--out", help="output folder (default export/<run>_<variant>_<precision>; "
                                  "--format triton: the model repository, default export/triton)")
    ex.add_argument("--quantization", default="dynamic", choices=QUANTIZATIONS,
                    help="INT8 on ONNX Runtime: dynamic (no calibration) or static Q/DQ (calibrated on training batches)")
    ex.add_argument("--calibration", default="entropy", choices=("minmax", "entropy", "percentile"))
    ex.add_argument("--calibration-batches", type=int, default=8)
    ex.add_argument("--no-per-channel", action="store_true", help="per-tensor instead of per-channel INT8 weights")
    ex.add_argument("--keep-fp32", action="append", default=None, metavar="MODULE",
                    help="module-name substring left unquantized (repeatable; default: model.head and model.fusion.inputs)")
    ex.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    ex.add_argument("--tolerance", type=float, help="parity tolerance on |score difference| (default per precision)")
    ex.add_argument("--data-root", help="data folder for parity/metrics/calibration (default: the checkpoint's)")
    ex.add_argument("--no-data", action="store_true", help="parity on random inputs only; no metrics")
    ex.add_argument("--no-shrink", action="store_true", help="keep zeroed (structurally pruned) units")
    ex.add_argument("--profile", help="TensorRT profile as JSON, e.g. '{\"batch\":[1,8,64],\"seq\":[1,32,64],\"frames\":[1,50,400]}'")
    ex.add_argument("--timing-cache", help="TensorRT timing cache file shared across builds")
    ex.add_argument("--overwrite", action="store_true",
                    help="replace an existing output folder (--format triton: the version folder --triton-version)")
    ex.add_argument("--json", action="store_true", help="print the manifest as JSON")
    tr = ex.add_argument_group("Triton model repository (--format triton)")
    tr.add_argument("--triton-name", help="model name (default: sentiment for text_only, sentiment_fused for fused); "
                                          "<name>_tokenizer and <name>_text are written beside it")
    tr.add_argument("--triton-version", type=int, default=1, help="version folder to write (default 1); a new N adds N/ to the model")
    tr.add_argument("--triton-max-batch", type=int, default=32, help="max_batch_size (default 32)")
    tr.add_argument("--triton-preferred-batch", help="dynamic_batching preferred_batch_size, e.g. 8,16,32 (default: 8, 16, ... up to max)")
    tr.add_argument("--triton-max-delay-us", type=int, default=2000, help="dynamic_batching max_queue_delay_microseconds (default 2000)")
    tr.add_argument("--triton-device", default="cpu", choices=tuple(DEVICES), help="instance_group kind (default cpu)")
    tr.add_argument("--triton-instances", type=int, default=1, help="instances of the engine and of the tokenizer (default 1)")
    tr.add_argument("--triton-threads", type=int, default=1, help="ONNX Runtime intra-op threads per CPU instance (default 1)")
    tr.add_argument("--triton-keep-versions", type=int, default=1, help="version_policy latest num_versions (default 1: serve the newest)")
    ex.set_defaults(func=_export)

    be = sub.add_parser("bench", help="latency p50/p95/p99 and throughput of engines (and PyTorch), side by side",
                        description="Times export folders (and, with --against, the PyTorch checkpoint) in one process after "
                                    "warm-up, at each batch size: interleaved round-robin (default) or each on its own (--blocks).")
    be.add_argument("engines", nargs="+", help="export folders (with manifest.json)")
    be.add_argument("--against", metavar="CKPT", help="also time PyTorch on this checkpoint: eager and the --native options")
    be.add_argument("--native", default="compile,bf16", metavar="KINDS",
                    help="with --against: the PyTorch-native options timed beside eager, comma-separated from compile, bf16 "
                         "(default compile,bf16; 'none' = eager only); ratios are given against eager and the fastest of them")
    be.add_argument("--batch", default="1,8,64", help="comma-separated batch sizes (default 1,8,64)")
    be.add_argument("--seq", type=positive_int, default=32, help="tokens per sample (default 32)")
    be.add_argument("--frames", type=positive_int, default=50, help="audio/vision frames per sample (default 50)")
    be.add_argument("--threads", type=int, default=None, help="threads for every variant (default: the usable cores)")
    be.add_argument("--runs", type=positive_int, default=200, help="timed runs at batch 1 (fewer at larger batches)")
    be.add_argument("--warmup", type=int, default=20)
    be.add_argument("--spin", action="store_true", help="let ORT threads spin (dedicated machines only)")
    be.add_argument("--blocks", action="store_true",
                    help="time each variant on its own, one after another (single-stream latency), not interleaved")
    be.add_argument("--json", action="store_true", help="print the JSON report")
    be.add_argument("--out", help="also write the JSON report to this file")
    be.set_defaults(func=_bench)

    rp = sub.add_parser("report", help="a run folder → HTML report with pictures; bench JSON → Pareto table and plot",
                        description="mmsenti report RUN_DIR: report.html + PNGs of a train.py run (scatter, confusion "
                                    "matrix, error by label bin, modality contribution, cross-modal attention). "
                                    "mmsenti report --pareto DIR|FILE.json (or a .json file alone): bench JSON → "
                                    "pareto.md + pareto.png.")
    rp.add_argument("path", metavar="RUN_DIR|BENCH",
                    help="a train.py run folder (with metrics.json), or bench JSON: a .json file, or a folder "
                         "searched recursively with --pareto")
    rp.add_argument("--pareto", action="store_true", help="bench JSON: accuracy vs p99 latency (pareto.md, pareto.png)")
    rp.add_argument("--split", default="test", choices=("val", "test"), help="--pareto: the accuracy split")
    rp.add_argument("--out", help="output folder (default: RUN_DIR/report; --pareto: the bench JSON's folder)")
    rp.add_argument("--data-root", help="run report: where the run's data lives now (default: where it trained)")
    rp.add_argument("--segment", action="append", metavar="ID",
                    help="run report: a test segment whose cross-modal attention to draw (repeatable; default: the "
                         "most positive, the most negative and the worst-predicted)")
    rp.add_argument("--no-progress", action="store_true", help="run report: no progress bar")
    rp.set_defaults(func=_report)


# ----------------------------------------------------------------------------- export
def datamodule_from_checkpoint(data_config: dict[str, Any], data_root: str | None = None):
    """Rebuild a checkpoint's datamodule from its ``LoadedCheckpoint.data_config`` (``data_root`` overrides
    where its data lives)."""
    from mmsenti.data.datamodule import SentimentDataModule

    hp = dict(data_config or {})
    if not hp:
        raise MmsentiError("the checkpoint records no datamodule; pass --data-root or --no-data")
    if data_root:
        key = "path" if hp.get("path") else "root"
        hp[key] = data_root
    dm = SentimentDataModule(**hp)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _export(args: argparse.Namespace) -> int:
    from mmsenti.export.pipeline import ExportOptions, checkpoint_source, export_model
    from mmsenti.export.quantize import DEFAULT_EXCLUDE
    from mmsenti.models.checkpoint import load_sentiment_checkpoint

    _quiet_libraries()
    opts = ExportOptions(format=args.format, variant=args.variant, precision=args.precision, opset=args.opset,
                         quantization=args.quantization, calibration_method=args.calibration,
                         calibration_batches=args.calibration_batches, per_channel=not args.no_per_channel,
                         exclude=tuple(args.keep_fp32) if args.keep_fp32 is not None else DEFAULT_EXCLUDE,
                         tolerance=args.tolerance, shrink=not args.no_shrink, timing_cache=args.timing_cache,
                         tensorrt_profile=json.loads(args.profile) if args.profile else {}, overwrite=args.overwrite)
    if opts.format == TRITON_FORMAT:
        opts.triton = triton_options(args)
    opts.validate()
    if opts.format == "tensorrt":  # the clear message first, before loading anything
        from mmsenti.runtime.tensorrt import import_tensorrt

        import_tensorrt()
    loaded = load_sentiment_checkpoint(args.ckpt)
    model = loaded.model
    if args.out:
        out = Path(args.out)
    else:
        out = Path("export") / ("triton" if opts.format == TRITON_FORMAT else f"{_run_name(args.ckpt)}_{args.variant}_{args.precision}")
    datamodule = None
    if not args.no_data:
        try:
            datamodule = datamodule_from_checkpoint(loaded.data_config, args.data_root)
        except MmsentiError as err:
            needs_data = opts.precision == "int8" and (opts.quantization == "static" or opts.format == "tensorrt")
            if needs_data:
                raise
            print(f"warning: no data for parity/metrics ({err}); checking parity on random inputs only", file=sys.stderr)
    manifest = export_model(model, out, opts, datamodule=datamodule, source=checkpoint_source(args.ckpt))
    if args.json:
        print(json.dumps(manifest, indent=2, default=str))
    else:
        print(_export_summary(out, manifest))
    return 0


def triton_options(args: argparse.Namespace):
    """``--triton-*`` flags as :class:`~mmsenti.export.triton.TritonOptions` (validated)."""
    from mmsenti.export.triton import TritonOptions

    preferred = parse_batches(args.triton_preferred_batch, "--triton-preferred-batch") if args.triton_preferred_batch else None
    opts = TritonOptions(name=args.triton_name, version=args.triton_version, max_batch_size=args.triton_max_batch,
                         preferred_batch_sizes=tuple(preferred) if preferred else None, max_queue_delay_us=args.triton_max_delay_us,
                         device=args.triton_device, instances=args.triton_instances, threads=args.triton_threads,
                         keep_versions=args.triton_keep_versions, overwrite=args.overwrite)
    opts.validate()
    return opts


def _run_name(ckpt: str) -> str:
    path = Path(ckpt).resolve()
    run = path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
    return f"{run}_{path.stem}".replace(" ", "_")


def _export_summary(out: Path, m: dict[str, Any]) -> str:
    p = m["parity"]
    lines = [f"exported {out} ({m['format']} {m['variant']} {m['precision']}, {m['size_bytes'] / 1e6:.1f} MB, opset {m['opset']})",
             f"parity vs {p['reference']}: max |{p.get('compared', 'score')} diff| {p['max_abs_diff']:.3g} (tolerance {p['tolerance']:g}) over {len(p['cases'])} cases"]
    for split, d in p.get("metrics", {}).items():
        lines.append(f"  {split} (n={d['n']}): Non0_acc_2 {100 * d['engine']['Non0_acc_2']:.2f}% "
                     f"(drift {100 * d['drift']['Non0_acc_2']:+.2f} pt), MAE {d['engine']['MAE']:.4f} "
                     f"(drift {d['drift']['MAE']:+.4f}), sign changes {d['sign_changes']}")
    s = m["compression"]["structured"]
    if s["params_after"] != s["params_before"]:
        lines.append(f"  structured pruning removed {s['params_before'] - s['params_after']:,} parameters "
                     f"(FFN {s['ffn_neurons']} → {s['ffn_neurons_after']}, heads {s['heads']} → {s['heads_after']})")
    if "triton" in m:
        t = m["triton"]
        lines.append(f"Triton repository {t['root']}: {t['engine']} (ONNX Runtime backend, versions {t['versions']}, wrote "
                     f"{t['version']}), {t['tokenizer']} (Python backend), {t['ensemble']} (ensemble: text -> score)")
        lines.append(f"  serve: tritonserver --model-repository={Path(t['root']).resolve()}  (docs/triton.md)")
    return "\n".join(lines)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("transformers", "torch.onnx", "onnxscript", "lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


# ----------------------------------------------------------------------------- bench
def parse_batches(text: str, flag: str = "--batch") -> list[int]:
    try:
        batches = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise MmsentiError(f"{flag} {text!r}: expected comma-separated integers like 1,8,64") from None
    if not batches or any(b < 1 for b in batches):
        raise MmsentiError(f"{flag} {text!r}: batch sizes must be >= 1")
    return batches


def _bench(args: argparse.Namespace) -> int:
    # torch's OpenMP workers must not spin between calls either (set before torch is imported)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from mmsenti.export.benchmark import engine_variant, run_benchmark, summary_table
    from mmsenti.runtime.session import default_threads

    batches = parse_batches(args.batch)
    threads = args.threads or default_threads()
    variants = []
    for folder in args.engines:
        variants.append(engine_variant(folder, threads, args.seq, args.frames, spin=args.spin))
    if args.against:
        from mmsenti.export.benchmark import native_variants
        from mmsenti.models.checkpoint import load_sentiment_checkpoint

        _quiet_libraries()
        model = load_sentiment_checkpoint(args.against, what="--against").model
        graph = variants[0].info.get("variant", "fused") if variants else "fused"
        kinds = [] if args.native.strip().lower() in ("", "none") else [k.strip() for k in args.native.split(",") if k.strip()]
        variants[:0] = native_variants(model, threads, args.seq, args.frames, kinds=["eager", *kinds], variant=graph,
                                       info={"path": args.against})
    report = run_benchmark(variants, batches, runs=args.runs, warmup=args.warmup, threads=threads, seq=args.seq, frames=args.frames,
                           mode="blocks" if args.blocks else "interleaved")
    if args.out:
        from mmsenti.io import write_json_atomic

        write_json_atomic(args.out, report)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(summary_table(report))
    return 0


# ----------------------------------------------------------------------------- report
def _report(args: argparse.Namespace) -> int:
    """One dispatch: ``--pareto`` or a ``.json`` file → Pareto report; a run folder → run report."""
    path = Path(args.path)
    if args.pareto or (path.is_file() and path.suffix == ".json"):
        return _pareto_report(args)
    from mmsenti.report import is_run_folder, write_run_report

    if not path.exists():
        raise MmsentiError(f"{path}: no such file or folder; expected a train.py run folder (with metrics.json), "
                           "or bench JSON (a .json file, or a folder with --pareto)")
    if not (path.is_dir() and is_run_folder(path)):
        what = "a folder without metrics.json" if path.is_dir() else "not a .json file"
        raise MmsentiError(f"{path}: neither a run folder nor bench JSON ({what}); expected a train.py run folder "
                           "(with metrics.json), or bench JSON (a .json file, or a folder with --pareto)")
    _quiet_libraries()
    result = write_run_report(path, args.out, data_root=args.data_root, segments=args.segment,
                              progress=not args.no_progress)
    print(f"wrote {result['html']} ({len(result['files']) - 1} pictures" +
          (f"; skipped {len(result['skipped'])} section(s))" if result["skipped"] else ")"))
    return 0


def _pareto_report(args: argparse.Namespace) -> int:
    from mmsenti.export.report import pareto_report

    result = pareto_report(args.path, split=args.split, out=args.out)
    print(f"wrote {result['markdown']}" + (f" and {result['png']}" if result["png"] else "") + f" from {result['source']}")
    print(f"Pareto front: {', '.join(result['front']) or '(no accuracy figures)'}")
    return 0
