"""L1 unstructured (magnitude) pruning with ``torch.nn.utils.prune``.

* :func:`l1_prune` — one shot: global L1 pruning of the ``nn.Linear`` weights in scope, made
  permanent at once (plain ``weight`` tensors with zeros; nothing left for export to trip on).
* :class:`ScheduledL1Pruning` — Lightning's ``ModelPruning`` callback with a sparsity *schedule*
  (cumulative targets per epoch, applied at the start of the epoch so each epoch fine-tunes the
  pruned weights), restricted to the ``nn.Linear`` weights in scope. Lightning makes the pruning
  permanent in every checkpoint it saves and in the model at the end of training.

Unstructured zeros do not speed dense kernels up; what they buy is size (a sparse or compressed
artifact) — :func:`sparsity_report` gives both counts. For speed use :mod:`.structured`.
"""

from __future__ import annotations

import gzip
import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelPruning
from torch import nn
from torch.nn.utils import prune

from mmsenti.compression.structured import SCOPES, _in_scope, load_init_weights
from mmsenti.errors import MmsentiError

log = logging.getLogger(__name__)


def linear_weights(model: nn.Module, scope: list[str] | tuple[str, ...] = SCOPES,
                   exclude: list[str] | tuple[str, ...] = ()) -> list[tuple[nn.Module, str]]:
    """``(module, "weight")`` for every ``nn.Linear`` whose qualified name is in scope.

    PyTorch's ``nn.MultiheadAttention``'s output projection is skipped: that module reads the weight
    directly instead of calling the Linear, so a pruning mask (a forward pre-hook) would be
    applied once and then go stale — and break the second backward pass. (mmsenti's own
    :class:`~mmsenti.models.attention.MultiheadAttention` calls its ``out_proj``, so it is pruned.)
    """
    skip = {id(m.out_proj) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    return [(m, "weight") for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and id(m) not in skip and _in_scope(name, scope) and not any(x in name for x in exclude)]


def l1_prune(model: nn.Module, amount: float, scope: list[str] | tuple[str, ...] = SCOPES,
             exclude: list[str] | tuple[str, ...] = (), use_global: bool = True) -> dict[str, Any]:
    """Zero the ``amount`` fraction of smallest-magnitude Linear weights in scope; permanent."""
    if not 0.0 <= amount < 1.0:
        raise MmsentiError(f"pruning amount {amount}: must be in [0, 1)")
    params = linear_weights(model, scope, exclude)
    if not params:
        raise MmsentiError(f"no nn.Linear weights in scope {list(scope)}")
    if use_global:
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    else:
        for module, name in params:
            prune.l1_unstructured(module, name, amount=amount)
    make_permanent(model)
    return sparsity_report(model, scope, compressed=True)


def make_permanent(model: nn.Module) -> int:
    """Fold every pruning mask into its weight (``prune.remove``); returns how many were folded."""
    count = 0
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
                count += 1
    return count


def is_pruning_pending(model: nn.Module) -> bool:
    """True while masks are still attached (``weight_orig`` + ``weight_mask``): export must wait."""
    return any(name.endswith("_mask") for name, _ in model.named_buffers())


@torch.no_grad()
def sparsity_report(model: nn.Module, scope: list[str] | tuple[str, ...] = SCOPES, compressed: bool = False) -> dict[str, Any]:
    """Zeros among the pruned (Linear, in-scope) weights and over the whole model, plus sizes.

    ``compressed=True`` adds ``linear_gzip_bytes`` (the in-scope fp32 weights gzip-compressed, vs
    ``linear_dense_bytes``): what unstructured zeros save on disk.
    """
    pruned = [getattr(m, n).detach() for m, n in linear_weights(model, scope)]
    total = sum(p.numel() for p in model.parameters())
    zeros = sum(int((p == 0).sum()) for p in model.parameters())
    in_scope = sum(p.numel() for p in pruned)
    in_scope_zeros = sum(int((p == 0).sum()) for p in pruned)
    report = {
        "params": total,
        "zeros": zeros,
        "sparsity": zeros / max(1, total),
        "linear_params_in_scope": in_scope,
        "linear_sparsity_in_scope": in_scope_zeros / max(1, in_scope),
        "dense_fp32_bytes": 4 * total,
        "nonzero_fp32_bytes": 4 * (total - zeros),
    }
    if compressed and pruned:
        raw = b"".join(p.float().cpu().numpy().tobytes() for p in pruned)
        report["linear_dense_bytes"] = len(raw)
        report["linear_gzip_bytes"] = len(gzip.compress(raw, compresslevel=1))
    return report


def step_amounts(targets: dict[int, float]) -> dict[int, float]:
    """Cumulative sparsity targets per epoch → the fraction of the *remaining* weights to prune.

    ``torch.nn.utils.prune`` applies each new amount to the weights still unpruned, so reaching
    30% then 50% means pruning 30%, then 2/7 of the remaining 70%.
    """
    out, previous = {}, 0.0
    for epoch in sorted(targets):
        target = float(targets[epoch])
        if not previous <= target < 1.0:
            raise MmsentiError(f"pruning schedule {targets}: targets must grow and stay below 1")
        if target > previous:
            out[epoch] = (target - previous) / (1.0 - previous)
        previous = target
    return out


class ScheduledL1Pruning(ModelPruning):
    """``ModelPruning`` (global L1 unstructured) on a cumulative sparsity schedule.

    ``schedule`` maps epoch → cumulative sparsity of the in-scope Linear weights, e.g.
    ``{0: 0.2, 1: 0.35, 2: 0.5}``. Pruning runs at the start of those epochs.
    """

    def __init__(self, schedule: dict[int, float], scope: list[str] | tuple[str, ...] = SCOPES,
                 exclude: list[str] | tuple[str, ...] = (), verbose: int = 0, init_from: str | None = None):
        self.schedule = {int(k): float(v) for k, v in dict(schedule).items()}
        self.steps = step_amounts(self.schedule)
        self.scope = tuple(scope)
        self.exclude = tuple(exclude)
        super().__init__(pruning_fn="l1_unstructured", amount=self._amount, use_global_unstructured=True,
                         make_pruning_permanent=True, use_lottery_ticket_hypothesis=False,
                         prune_on_train_epoch_end=True, verbose=verbose)
        self.applied: list[dict[str, Any]] = []
        self.init_from = init_from

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        load_init_weights(pl_module, self.init_from)

    def _amount(self, epoch: int) -> float:
        return self.steps.get(int(epoch), 0.0)

    def filter_parameters_to_prune(self, parameters_to_prune=()):
        pl_module = getattr(self, "_pl_module", None)
        if pl_module is None:
            return parameters_to_prune
        return linear_weights(pl_module, self.scope, self.exclude)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._pl_module = pl_module
        super().setup(trainer, pl_module, stage)
        if not self._parameters_to_prune:
            raise MmsentiError(f"compression: no nn.Linear weights in scope {list(self.scope)}")

    # prune at the *start* of an epoch, so that the epoch fine-tunes the pruned network and the
    # checkpoints saved after it hold the sparsity the schedule asked for
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self._amount(epoch):
            self._run_pruning(epoch)
            report = sparsity_report(pl_module, self.scope)
            self.applied.append({"epoch": epoch, "linear_sparsity_in_scope": round(report["linear_sparsity_in_scope"], 4)})
            log.info("L1 pruning at epoch %d: %.1f%% of in-scope Linear weights are zero", epoch,
                     100 * report["linear_sparsity_in_scope"])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        checkpoint.setdefault("mmsenti_compression", {})["l1_unstructured"] = {"schedule": self.schedule, "applied": list(self.applied)}


class CheckpointAfterPruning(L.pytorch.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` that only considers epochs once the pruning schedule is complete.

    Otherwise the "best" checkpoint of a pruning run is typically an early, less sparse epoch.
    """

    def __init__(self, *args: Any, start_epoch: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.start_epoch = int(start_epoch)

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        if trainer.current_epoch >= self.start_epoch:
            super()._save_topk_checkpoint(trainer, monitor_candidates)
