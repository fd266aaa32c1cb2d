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
    out["export"] = {"manifests": manifests, "summary": summary}
    return out
