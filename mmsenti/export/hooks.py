"""The post-training hook: compression report and export of the best checkpoint (``export=onnx``).

Called by :func:`mmsenti.training.tasks.train` on rank 0 when ``cfg.compression`` or ``cfg.export``
is set; what it returns is merged into the run's ``metrics.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mmsenti.errors import MmsentiError

log = logging.getLogger(__name__)


def compression_summary(model) -> dict[str, Any]:
    """Sparsity and structure of a trained SentimentModel, before and after shrinking."""
    from mmsenti.export.pipeline import prepare_model

    _, report = prepare_model(model, shrink=True, compressed_size=True)
    return report


def after_training(cfg: DictConfig, lit_module, datamodule, output_dir: str | Path, best_ckpt: str | None) -> dict[str, Any]:
    from mmsenti.export import DEFAULT_OPSET
    from mmsenti.export.pipeline import ExportOptions, checkpoint_source, export_model
    from mmsenti.export.quantize import DEFAULT_EXCLUDE
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
    e = OmegaConf.to_container(export_cfg, resolve=True)
    source = checkpoint_source(best_ckpt) if best_ckpt and Path(best_ckpt).is_file() else {"checkpoint": None}
    manifests: dict[str, str] = {}
    summary: dict[str, Any] = {}
    for variant in e.get("variants", ["fused"]):
        for precision in e.get("precisions", ["fp32"]):
            opts = ExportOptions(format=e.get("format", "onnx"), variant=variant, precision=precision, opset=int(e.get("opset", DEFAULT_OPSET)),
                                 quantization=e.get("quantization", "dynamic"),
                                 calibration_method=e.get("calibration_method", "entropy"),
                                 per_channel=bool(e.get("per_channel", True)), exclude=tuple(e.get("keep_fp32", DEFAULT_EXCLUDE)),
                                 tolerance=e.get("tolerance"), metrics=bool(e.get("metrics", True)),
                                 tensorrt_profile=e.get("tensorrt_profile") or {}, overwrite=True)
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
