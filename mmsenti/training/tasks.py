"""The Hydra tasks behind ``train.py`` and ``eval.py``: compose, instantiate, run, write results.

Every run writes, in its own folder (``logs/<task>/runs/<time>/``): ``resolved_config.yaml``,
``metrics.json`` (``{"val": {...}, "test": {...}, "best_ckpt": ..., "seed": ..., ...}``),
checkpoints, CSV and TensorBoard logs.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from mmsenti.errors import MmsentiError, debug_requested, describe_input_error, internal_error_line
from mmsenti.io import write_json_atomic
from mmsenti.training.callbacks import TestPredictionsWriter
from mmsenti.training.schema import check_config
from mmsenti.metrics import format_metrics_table

log = logging.getLogger(__name__)

METRIC_SPLITS = {"val": "valid", "test": "test"}


# ---------------------------------------------------------------------------- helpers
def _drop_advertising(record: logging.LogRecord) -> bool:
    """Lightning logs a tip about its hosted logger on every run; keep run logs to the point."""
    return "💡 Tip" not in str(record.msg)


def apply_extras(cfg: DictConfig) -> None:
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        for pattern in (".*does not have many workers.*", ".*LeafSpec.*", ".*Checkpoint directory.*exists and is not empty.*",
                        ".*is smaller than the logging interval.*", ".*TensorBoard.*", ".*Trying to infer the `batch_size`.*",
                        ".*on_epoch=True.*",
                        # frozen encoder layers run in eval mode on purpose (the frozen-prefix cache, finetune=frozen)
                        r".*module\(s\) in eval mode at the start of training.*"):
            warnings.filterwarnings("ignore", message=pattern)
        for name in ("transformers", "huggingface_hub"):
            logging.getLogger(name).setLevel(logging.ERROR)
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # Hydra's handlers print these once
            logging.getLogger(name).handlers.clear()
            logging.getLogger(name).propagate = True
        logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_drop_advertising)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover
            pass
    if extras.get("print_config"):
        log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a callbacks/logger group (a dict of configs)."""
    objects: list[Any] = []
    for name, conf in (group or {}).items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            objects.append(hydra.utils.instantiate(conf))
    return objects


def find_last_checkpoint(log_dir: str | Path, task_name: str, exclude: str | Path | None = None) -> Path:
    """The newest ``last.ckpt`` among this task's earlier runs (for ``ckpt_path=last``)."""
    root = Path(log_dir) / task_name
    candidates = [p for p in root.glob("*runs/**/checkpoints/last.ckpt")
                  if exclude is None or Path(exclude) not in p.parents]
    if not candidates:
        raise MmsentiError(f"ckpt_path=last: no last.ckpt under {root}; train first or pass a checkpoint path")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    ckpt = cfg.get("ckpt_path")
    if not ckpt:
        return None
    if ckpt == "last":
        path = find_last_checkpoint(cfg.paths.log_dir, cfg.task_name, exclude=cfg.paths.output_dir)
        log.info("resuming from %s", path)
        return str(path)
    if not Path(ckpt).is_file():
        raise MmsentiError(f"ckpt_path={ckpt}: no such file")
    return str(ckpt)


def check_checkpoint(ckpt_path: str, module: torch.nn.Module) -> None:
    """Fail with one line when a checkpoint does not fit the configured model (instead of a long traceback).

    A low-rank factorised checkpoint (``compression=lowrank``) first gives the module's network the
    thin layers it records, so that resuming or evaluating it loads into the same structure.
    """
    from mmsenti.models.checkpoint import (
        checkpoint_low_rank, describe_mismatch, match_checkpoint_structure, read_checkpoint, state_dict_mismatch)

    ckpt = read_checkpoint(ckpt_path, "ckpt_path")
    if checkpoint_low_rank(ckpt) and isinstance(getattr(module, "net", None), torch.nn.Module):
        match_checkpoint_structure(module.net, ckpt, f"ckpt_path={ckpt_path}")
    state = ckpt["state_dict"]
    details = describe_mismatch(state_dict_mismatch(module.state_dict(), state))
    if details:
        raise MmsentiError(f"{ckpt_path} does not match the configured model ({details}); "
                           f"use the experiment/model overrides it was trained with")


def split_metrics(results: list[dict[str, float]], prefix: str) -> dict[str, float]:
    """``trainer.validate/test`` results → ``{"MAE": ..., ...}`` for one split."""
    merged: dict[str, float] = {}
    for r in results:
        merged.update(r)
    return {k.split("/", 1)[1]: float(v) for k, v in merged.items()
            if k.startswith(prefix + "/") and not k.endswith("_prog")}


def _config_inputs(cfg: DictConfig) -> dict[str, Any]:
    """The config's paths (data.root / data.path / ckpt_path): what an error that names no file is traced to."""
    out = {}
    for key in ("data.path", "data.root", "data.folds", "ckpt_path"):
        try:
            value = OmegaConf.select(cfg, key, default=None)
        except Exception:  # an interpolation that cannot resolve: nothing to name
            continue
        if isinstance(value, str) and value:
            out[key] = value
    return out


def run_safely(task: Callable[..., Any], cfg: DictConfig, *args: Any) -> Any:
    """Run ``task(cfg, *args)`` under the one error policy (:mod:`mmsenti.errors`).

    A user-fixable problem (:class:`MmsentiError`, or a missing / unreadable / damaged file that
    escaped) becomes one ``error:`` line and exit code 2; anything else is a bug and keeps its
    traceback (Hydra prints it), with a line saying so. ``+extras.debug=true`` or ``MMSENTI_DEBUG=1``
    re-raise every error with the full traceback (Hydra's ``HYDRA_FULL_ERROR`` is set for it).
    """
    try:
        debug = debug_requested(OmegaConf.select(cfg, "extras.debug", default=False))
    except Exception:  # pragma: no cover - an unresolvable extras node
        debug = debug_requested()
    try:
        return task(cfg, *args)
    except Exception as err:
        if debug:
            os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra trims the traceback to the task's frames otherwise
            raise
        message = str(err) if isinstance(err, MmsentiError) else describe_input_error(err, _config_inputs(cfg))
        if message is None:  # a bug: Hydra prints its traceback
            line = internal_error_line(err, " (MMSENTI_DEBUG=1 or +extras.debug=true shows every frame)")
            log.error("%s", line)
            print(line, file=sys.stderr)
            raise
        log.error("%s", message)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


# ---------------------------------------------------------------------------- tasks
def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train (and evaluate) the configured model; returns (metrics, objects)."""
    check_config(cfg)  # a typo fails here, before any data or weights are loaded
    apply_extras(cfg)
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")  # the data's feature widths (dm.feature_dims) size the model's frame encoders
    cfg.data.audio_dim, cfg.data.vision_dim = datamodule.feature_dims["audio"], datamodule.feature_dims["vision"]
    (output_dir / "resolved_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    model: L.LightningModule = hydra.utils.instantiate(cfg.model, _convert_="all")
    loggers = instantiate_group(cfg.get("logger"))
    callbacks = instantiate_group(cfg.get("callbacks"))
    if not loggers:  # nothing to write learning rates to (e.g. logger=none)
        callbacks = [c for c in callbacks if not isinstance(c, L.pytorch.callbacks.LearningRateMonitor)]
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    ckpt_path = resolve_ckpt_path(cfg)
    if ckpt_path:
        check_checkpoint(ckpt_path, model)

    started = time.perf_counter()
    if cfg.get("train"):
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
    train_seconds = time.perf_counter() - started

    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    eval_ckpt = best if best and Path(best).is_file() else None
    if eval_ckpt is None and not cfg.get("train"):
        eval_ckpt = ckpt_path
    metrics: dict[str, Any] = {}
    if cfg.get("test"):
        datamodule.setup("validate")
        metrics["val"] = split_metrics(trainer.validate(model=model, datamodule=datamodule, ckpt_path=eval_ckpt, verbose=False), "val")
        if datamodule.splits.get("test"):
            metrics["test"] = split_metrics(trainer.test(model=model, datamodule=datamodule, ckpt_path=eval_ckpt, verbose=False), "test")
        else:
            log.info("no test split in %s: reporting valid only", getattr(datamodule, "location", "the data"))
    timer = next((c for c in callbacks if hasattr(c, "epoch_seconds")), None)
    summary = {
        **metrics,
        "best_ckpt": eval_ckpt,
        "last_ckpt": str(output_dir / "checkpoints" / "last.ckpt") if (output_dir / "checkpoints" / "last.ckpt").is_file() else None,
        "seed": int(cfg.seed),
        "task_name": cfg.task_name,
        "epochs_trained": int(trainer.current_epoch),
        "world_size": int(trainer.world_size),
        "train_seconds": round(train_seconds, 2),
        "epoch_seconds": timer.epoch_seconds if timer else [],
        "data_report": getattr(datamodule, "report", {}),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if trainer.is_global_zero and (cfg.get("compression") or cfg.get("export")):  # sparsity report; export the best checkpoint
        from mmsenti.export.hooks import after_training

        summary.update(after_training(cfg, model, datamodule, output_dir, eval_ckpt))
    if trainer.is_global_zero:
        write_json_atomic(output_dir / "metrics.json", summary)
        if metrics:
            table = format_metrics_table(metrics)
            log.info("metrics (best checkpoint: %s)\n%s", eval_ckpt, table)
        log.info("results: %s", output_dir / "metrics.json")
    flat = {f"{split}/{k}": v for split, values in metrics.items() for k, v in values.items()}
    if summary.get("export"):  # engine metrics and latency (export.benchmark): optimizable like val/MAE
        from mmsenti.export.hooks import engine_objectives

        flat.update(engine_objectives(summary["export"]["summary"]))
    return flat, {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer}


def evaluate(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate a checkpoint on the valid and test splits; writes metrics.json."""
    check_config(cfg)
    apply_extras(cfg)
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = resolve_ckpt_path(cfg)
    if ckpt_path is None:
        raise MmsentiError("eval needs ckpt_path=<file.ckpt>")
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("validate")  # widths from the data: a checkpoint of other widths fails check_checkpoint
    cfg.data.audio_dim, cfg.data.vision_dim = datamodule.feature_dims["audio"], datamodule.feature_dims["vision"]
    model = hydra.utils.instantiate(cfg.model, _convert_="all")
    check_checkpoint(ckpt_path, model)
    loggers = instantiate_group(cfg.get("logger"))
    # predictions.csv: an eval run can be reported too (mmsenti report <run_dir>)
    trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers or False,
                                      callbacks=[TestPredictionsWriter(str(output_dir / "predictions.csv"))])
    datamodule.setup("validate")
    metrics = {"val": split_metrics(trainer.validate(model=model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False), "val")}
    if datamodule.splits.get("test"):
        metrics["test"] = split_metrics(trainer.test(model=model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False), "test")
    write_json_atomic(output_dir / "metrics.json", {**metrics, "ckpt": ckpt_path, "seed": int(cfg.seed),
                                                    "config": OmegaConf.to_container(cfg, resolve=True)})
    print(format_metrics_table(metrics))
    flat = {f"{split}/{k}": v for split, values in metrics.items() for k, v in values.items()}
    return flat, {"cfg": cfg, "model": model, "trainer": trainer}


def optimized_value(cfg: DictConfig, metrics: dict[str, Any]) -> float | list[float] | None:
    """The value(s) Optuna optimises (``optimized_metric``), with a clear error when one is not logged.

    A name gives a float; a list of names (a multi-objective study, e.g. ``[engine/val/MAE, engine/p50_ms]``
    in ``hparams_search=mosi_nas``) gives a list in that order. The values are also written to the run's
    ``metrics.json`` as ``objectives`` (names and values), which is how ``mmsenti search`` finds the run
    folder of a study's trial. ``None`` when there is nothing to compute: no ``optimized_metric``, or
    ``test=false``.
    """
    spec = cfg.get("optimized_metric")
    if not spec:
        return None
    names = [str(n) for n in spec] if isinstance(spec, (list, tuple, ListConfig)) else [str(spec)]
    if not cfg.get("test"):  # nothing was evaluated: a finished run, with nothing to return
        log.info("test=false: the best checkpoint was not evaluated, so optimized_metric=%s has no value "
                 "(a sweep needs test=true)", ",".join(names))
        return None
    missing = [n for n in names if n not in metrics]
    if missing:
        hint = " (engine/... figures need export=onnx, and latency export.benchmark)" if any(
            n.startswith("engine/") for n in missing) else ""
        raise MmsentiError(f"optimized_metric={','.join(missing)} was not computed{hint}; "
                           f"available: {', '.join(sorted(metrics))}")
    values = [float(metrics[n]) for n in names]
    record = Path(cfg.paths.output_dir) / "metrics.json"
    if record.is_file():
        import json

        summary = json.loads(record.read_text())
        summary["objectives"] = {"names": names, "values": values}
        write_json_atomic(record, summary)
    return values if isinstance(spec, (list, tuple, ListConfig)) else values[0]
