"""The post-training hook: compression report and export of the best checkpoint (``export=onnx``).

Called by :func:`mmsenti.training.tasks.train` on rank 0 when ``cfg.compression`` or ``cfg.export``
is set; what it returns is merged into the run's ``metrics.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mmsenti.errors import MmsentiError

log = logging.getLogger(__name__)


@dataclass
class ExportConfig:
    """The ``export`` config node (``configs/export/onnx.yaml``): which engines to write after training.

    Each (variant, precision) pair becomes one :class:`~mmsenti.export.pipeline.ExportOptions`; the
    defaults of the shared fields are that class's own.
    """

    format: str = "onnx"
    variants: list[str] = field(default_factory=lambda: ["fused"])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    quantization: str = "dynamic"
    calibration_method: str = "entropy"
    per_channel: bool = True
    keep_fp32: list[str] | None = None  # module-name substrings left unquantized; None = DEFAULT_EXCLUDE
    opset: int | None = None  # None = DEFAULT_OPSET
    tolerance: float | None = None
    metrics: bool = True
    tensorrt_profile: dict[str, Any] | None = None
    # time each engine after export (the one harness, mmsenti.export.benchmark): e.g. {batch: 1, threads: 1,
    # runs: 200}; null = no timing. Latency-aware search (hparams_search=mosi_nas) optimises its p50.
    benchmark: dict[str, Any] | None = None

    @classmethod
    def from_node(cls, node: dict[str, Any]) -> "ExportConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(node) - known)
        if unknown:
            raise MmsentiError(f"export: unknown key(s) {unknown}; valid keys: {', '.join(sorted(known))}")
        return cls(**node)

    def options(self, variant: str, precision: str):
        from mmsenti.export import DEFAULT_OPSET
        from mmsenti.export.pipeline import ExportOptions
        from mmsenti.export.quantize import DEFAULT_EXCLUDE

        return ExportOptions(format=self.format, variant=variant, precision=precision, opset=int(self.opset or DEFAULT_OPSET),
                             quantization=self.quantization, calibration_method=self.calibration_method,
                             per_channel=bool(self.per_channel),
                             exclude=tuple(self.keep_fp32) if self.keep_fp32 is not None else DEFAULT_EXCLUDE,
                             tolerance=self.tolerance, metrics=bool(self.metrics),
                             tensorrt_profile=dict(self.tensorrt_profile or {}), overwrite=True)


BENCH_DEFAULTS = {"batch": 1, "threads": 1, "runs": 200, "warmup": 20, "seq": 32, "frames": 50}


def time_engines(engines: dict[str, str | Path], settings: dict[str, Any], mode: str = "blocks") -> dict[str, Any]:
    """Bench JSON of export folders timed with ``export.benchmark``'s settings (defaults :data:`BENCH_DEFAULTS`).

    Fixed synthetic inputs (``seq`` tokens, ``frames`` frames, seed 0), so that engines timed at different
    moments (the trials of a search) are timed on the same work; the first engine is the reference.
    """
    from mmsenti.export.benchmark import engine_variant, run_benchmark

    unknown = sorted(set(settings) - set(BENCH_DEFAULTS))
    if unknown:
        raise MmsentiError(f"export.benchmark: unknown key(s) {unknown}; valid keys: {', '.join(BENCH_DEFAULTS)}")
    s = {**BENCH_DEFAULTS, **settings}
    variants = [engine_variant(path, int(s["threads"]), int(s["seq"]), int(s["frames"]), name=name)
                for name, path in engines.items()]
    report = run_benchmark(variants, [int(s["batch"])], runs=int(s["runs"]), warmup=int(s["warmup"]),
                           threads=int(s["threads"]), seq=int(s["seq"]), frames=int(s["frames"]),
                           reference=next(iter(engines)), mode=mode)
    report["settings"]["benchmark"] = s
    return report


def engine_latency(folder: str | Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Single-stream latency of one exported engine (``export.benchmark``): p50/p99 in ms and the settings;
    the engine timed on its own (``blocks`` mode), as a deployment runs it."""
    report = time_engines({Path(folder).name: folder}, settings)
    s = report["settings"]["benchmark"]
    if report["failed"]:
        raise MmsentiError(f"export.benchmark: {folder}: {next(iter(report['failed'].values()))}")
    row = report["results"][0]
    return {"p50_ms": row["p50_ms"], "p99_ms": row["p99_ms"], "mean_ms": row["mean_ms"], "settings": s,
            "cpu": report["hardware"].get("cpu"), "load_avg": report["hardware"].get("load_avg_after")}


def engine_objectives(export_summary: dict[str, Any]) -> dict[str, float]:
    """Flat figures of the exported engines, for ``optimized_metric`` (e.g. a latency-aware search).

    ``engine/<variant>_<precision>/<split>/<metric>`` and ``.../p50_ms`` / ``p99_ms`` per engine, and the
    same names without the engine part (``engine/val/MAE``, ``engine/p50_ms``) for the first engine
    exported: a search that varies the precision names one objective whatever engine a trial wrote.
    """
    flat: dict[str, float] = {}
    first = True
    for name, s in export_summary.items():
        if "error" in s:
            continue
        figures = {f"{split}/{k}": float(v) for split, values in (s.get("metrics") or {}).items() for k, v in values.items()}
        figures.update({k: float(s["latency"][k]) for k in ("p50_ms", "p99_ms")} if s.get("latency") else {})
        flat.update({f"engine/{name}/{k}": v for k, v in figures.items()})
        if first:
            flat.update({f"engine/{k}": v for k, v in figures.items()})
            first = False
    return flat


def compression_summary(model) -> dict[str, Any]:
    """Sparsity and structure of a trained SentimentModel, before and after shrinking."""
    from mmsenti.export.pipeline import prepare_model

    _, report = prepare_model(model, shrink=True, compressed_size=True)
    return report


def after_training(cfg: DictConfig, lit_module, datamodule, output_dir: str | Path, best_ckpt: str | None) -> dict[str, Any]:
    from mmsenti.export.pipeline import checkpoint_source, export_model
    from mmsenti.models.checkpoint import load_sentiment_checkpoint

    out: dict[str, Any] = {}
    model = lit_module.net
    if best_ckpt and Path(best_ckpt).is_file():
        model = load_sentiment_checkpoint(best_ckpt).model  # export what the metrics describe: the best checkpoint
    if cfg.get("compression"):
        out["compression"] = {"config": OmegaConf.to_container(cfg.compression, resolve=True), **compression_summary(model)}
    export_cfg = cfg.get("export")
    if not export_cfg:
        return out
    e = ExportConfig.from_node(OmegaConf.to_container(export_cfg, resolve=True))
    source = checkpoint_source(best_ckpt) if best_ckpt and Path(best_ckpt).is_file() else {"checkpoint": None}
    manifests: dict[str, str] = {}
    summary: dict[str, Any] = {}
    for variant in e.variants:
        for precision in e.precisions:
            opts = e.options(variant, precision)
            name = f"{variant}_{precision}"
            try:
                manifest = export_model(model, Path(output_dir) / "export" / name, opts, datamodule=datamodule, source=source)
            except MmsentiError as err:  # training succeeded; say what failed and keep the run's results
                log.error("export %s failed: %s", name, err)
                summary[name] = {"error": str(err)}
                continue
            manifests[name] = str(Path(output_dir) / "export" / name / "manifest.json")
            summary[name] = {"parity_max_abs_diff": manifest["parity"]["max_abs_diff"], "size_bytes": manifest["size_bytes"],
                             "metrics": manifest["metrics"]["engine"]}
            if e.benchmark is not None:
                summary[name]["latency"] = latency = engine_latency(Path(output_dir) / "export" / name, dict(e.benchmark))
                log.info("engine %s: batch-%d p50 %.3f ms, p99 %.3f ms (%d thread(s))", name, latency["settings"]["batch"],
                         latency["p50_ms"], latency["p99_ms"], latency["settings"]["threads"])
    out["export"] = {"manifests": manifests, "summary": summary}
    return out
