"""Structured pruning: whole FFN neurons and attention heads, removed so dense kernels get faster.

Two stages, so that training and checkpoints never see a changed architecture:

1. **masking** (while fine-tuning): the least important units are zeroed in place — an FFN neuron
   is its row (and bias) of the up-projection and its column of the down-projection; an attention
   head is its rows of query/key/value (and biases) and its columns of the output projection.
   :class:`StructuredPruning` re-applies the masks after every optimiser step, on a schedule that
   prunes a growing fraction (iterative prune → fine-tune). Checkpoints keep the original shapes,
   so they load into the unchanged model.
2. **shrinking** (before export): :func:`shrink` drops every unit whose up-projection row / value
   rows are exactly zero. The function computed is unchanged (GELU(0) = ReLU(0) = 0, and a head
   with zero values contributes zero), the matrices are physically smaller.

Covered: the HF text encoder's FFNs and self-attention heads, for every architecture with an
adapter (:mod:`mmsenti.models.adapters`: BERT/MiniLM, MPNet, DistilBERT; another is refused with
one line), the MulT cross-modal blocks' FFNs and every transformer encoder layer's FFN (fusion
self-attention, frame encoders: :class:`mmsenti.models.attention.TransformerEncoderLayer` or
``nn.TransformerEncoderLayer``). The small attention modules' heads are not pruned: their packed
projection ties the head count to the model width.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import nn

from mmsenti.errors import MmsentiError
from mmsenti.models.adapters import EncoderAdapter, adapter_for
from mmsenti.models.adapters import get_path as _get
from mmsenti.models.adapters import set_path as _set
from mmsenti.models.attention import TransformerEncoderLayer
from mmsenti.models.checkpoint import describe_mismatch, read_checkpoint, state_dict_mismatch

log = logging.getLogger(__name__)

SCOPES = ("text_encoder", "fusion", "frame_encoders")


@dataclass
class FFNUnit:
    """An up-projection, its activation, and the down-projection reading its neurons."""

    name: str
    parent: nn.Module
    up_attr: str  # attribute path from parent, e.g. "intermediate.dense" or "linear1" or "ff.0"
    down_attr: str

    @property
    def up(self) -> nn.Linear:
        return _get(self.parent, self.up_attr)

    @property
    def down(self) -> nn.Linear:
        return _get(self.parent, self.down_attr)

    @property
    def size(self) -> int:
        return self.up.out_features


@dataclass
class HeadUnit:
    """The self-attention heads of one HF encoder layer (paths from its architecture adapter)."""

    name: str
    layer: nn.Module
    adapter: EncoderAdapter

    def proj(self, which: str) -> nn.Linear:  # query | key | value | out
        return _get(self.layer, self.adapter.projections(self.layer)[which])

    @property
    def head_size(self) -> int:
        return self.adapter.head_size(self.layer)

    @property
    def size(self) -> int:
        return self.proj("value").out_features // self.head_size


def _in_scope(name: str, scope: tuple[str, ...] | list[str]) -> bool:
    return any(name == s or name.startswith(s + ".") or f".{s}." in f".{name}." for s in scope)


def find_units(model: nn.Module, scope: tuple[str, ...] | list[str] = SCOPES) -> tuple[list[FFNUnit], list[HeadUnit]]:
    """Every prunable FFN and head group inside ``model`` (a SentimentModel or a module holding one)."""
    ffn: list[FFNUnit] = []
    heads: list[HeadUnit] = []
    hf_layers: dict[int, tuple[EncoderAdapter, nn.Module]] = {}
    for name, module in model.named_modules():
        if name.endswith("text_encoder") and hasattr(module, "backbone") and _in_scope(f"{name}.backbone", scope):
            backbone = module.backbone
            if not hasattr(getattr(backbone, "config", None), "model_type") or backbone.config.model_type == "bilstm":
                continue  # no transformer layers: nothing structured to prune in the text encoder
            adapter = adapter_for(backbone, "structured pruning of the text encoder")
            for layer in adapter.layers(backbone):
                hf_layers[id(layer)] = (adapter, layer)
    for name, module in model.named_modules():
        if not _in_scope(name, scope):
            continue
        if id(module) in hf_layers:
            adapter, layer = hf_layers[id(module)]
            up, down = adapter.ffn(layer)
            ffn.append(FFNUnit(f"{name}.ffn", layer, up, down))
            if adapter.head_pruning is None:
                heads.append(HeadUnit(f"{name}.heads", layer, adapter))
        elif isinstance(module, (nn.TransformerEncoderLayer, TransformerEncoderLayer)):
            ffn.append(FFNUnit(f"{name}.ffn", module, "linear1", "linear2"))
        elif isinstance(getattr(module, "ff", None), nn.Sequential) and len(module.ff) == 4 \
                and isinstance(module.ff[0], nn.Linear) and isinstance(module.ff[3], nn.Linear):  # CrossModalBlock
            ffn.append(FFNUnit(f"{name}.ffn", module, "ff.0", "ff.3"))
    return ffn, heads


# ----------------------------------------------------------------------------- importance and masks
@torch.no_grad()
def ffn_importance(unit: FFNUnit) -> torch.Tensor:
    """Magnitude of each neuron: ||row of W_up|| * ||column of W_down|| (data-free)."""
    up, down = unit.up, unit.down
    rows = torch.linalg.vector_norm(torch.cat([up.weight, up.bias[:, None]], 1) if up.bias is not None else up.weight, dim=1)
    return rows * torch.linalg.vector_norm(down.weight, dim=0)


@torch.no_grad()
def head_importance(unit: HeadUnit) -> torch.Tensor:
    """Magnitude of each head: ||its value rows|| * ||its output columns|| + ||query/key rows||² terms."""
    out = unit.proj("out")
    hs, n = unit.head_size, unit.size

    def per_head(w: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(w.reshape(n, hs, -1), dim=(1, 2))

    value = per_head(unit.proj("value").weight) * torch.linalg.vector_norm(out.weight.reshape(out.out_features, n, hs), dim=(0, 2))
    return value * (per_head(unit.proj("query").weight) * per_head(unit.proj("key").weight)).sqrt()


def _check_head_pruning(model: nn.Module, scope: tuple[str, ...] | list[str]) -> None:
    for name, module in model.named_modules():
        if name.endswith("text_encoder") and hasattr(module, "backbone") and _in_scope(f"{name}.backbone", scope):
            config = getattr(module.backbone, "config", None)
            if getattr(config, "model_type", "bilstm") != "bilstm":
                reason = adapter_for(module.backbone, "structured pruning").head_pruning
                if reason:
                    raise MmsentiError(f"compression.head_amount > 0: {reason}")


def keep_mask(scores: torch.Tensor, amount: float, multiple_of: int = 1) -> torch.Tensor:
    """True for units kept: drop the ``amount`` fraction with the lowest scores (at least one kept)."""
    n = scores.numel()
    keep = max(1, n - int(round(amount * n)))
    if multiple_of > 1 and keep > multiple_of:
        keep = int(round(keep / multiple_of)) * multiple_of
    mask = torch.zeros(n, dtype=torch.bool, device=scores.device)
    mask[torch.argsort(scores, descending=True, stable=True)[:keep]] = True
    return mask


@torch.no_grad()
def zero_ffn(unit: FFNUnit, keep: torch.Tensor) -> None:
    drop = ~keep.to(unit.up.weight.device)
    unit.up.weight[drop] = 0
    if unit.up.bias is not None:
        unit.up.bias[drop] = 0
    unit.down.weight[:, drop] = 0


@torch.no_grad()
def zero_heads(unit: HeadUnit, keep: torch.Tensor) -> None:
    rows = (~keep).repeat_interleave(unit.head_size).to(unit.proj("value").weight.device)
    for lin in (unit.proj("query"), unit.proj("key"), unit.proj("value")):
        lin.weight[rows] = 0
        if lin.bias is not None:
            lin.bias[rows] = 0
    unit.proj("out").weight[:, rows] = 0


def compute_masks(model: nn.Module, ffn_amount: float = 0.0, head_amount: float = 0.0,
                  scope: tuple[str, ...] | list[str] = SCOPES, multiple_of: int = 1) -> dict[str, torch.Tensor]:
    """Keep-masks per unit name; zeroed units score 0, so masks only ever grow sparser."""
    ffn, heads = find_units(model, scope)
    if head_amount > 0:
        _check_head_pruning(model, scope)
    masks = {}
    if ffn_amount > 0:
        masks.update({u.name: keep_mask(ffn_importance(u), ffn_amount, multiple_of) for u in ffn})
    if head_amount > 0:
        masks.update({u.name: keep_mask(head_importance(u), head_amount) for u in heads})
    return masks


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor], scope: tuple[str, ...] | list[str] = SCOPES) -> None:
    ffn, heads = find_units(model, scope)
    for u in ffn:
        if u.name in masks:
            zero_ffn(u, masks[u.name])
    for u in heads:
        if u.name in masks:
            zero_heads(u, masks[u.name])


def prune_structured(model: nn.Module, ffn_amount: float = 0.0, head_amount: float = 0.0,
                     scope: tuple[str, ...] | list[str] = SCOPES, multiple_of: int = 1, shrink_now: bool = True) -> dict[str, Any]:
    """One-shot: mask the least important units, then (by default) physically remove them."""
    masks = compute_masks(model, ffn_amount, head_amount, scope, multiple_of)
    apply_masks(model, masks, scope)
    return shrink(model, scope) if shrink_now else structure_report(model, scope)


# ----------------------------------------------------------------------------- shrinking
def _new_linear(old: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    w = old.weight.data
    if rows is not None:
        w = w[rows]
    if cols is not None:
        w = w[:, cols]
    new = nn.Linear(w.shape[1], w.shape[0], bias=old.bias is not None, device=w.device, dtype=w.dtype)
    new.weight.data.copy_(w)
    if old.bias is not None:
        new.bias.data.copy_(old.bias.data[rows] if rows is not None else old.bias.data)
    new.weight.requires_grad_(old.weight.requires_grad)
    if old.bias is not None:
        new.bias.requires_grad_(old.bias.requires_grad)
    new.train(old.training)
    return new


def _dead_neurons(unit: FFNUnit) -> torch.Tensor:
    """Neurons whose up-projection row and bias are exactly zero (their output is act(0) = 0)."""
    up = unit.up
    alive = up.weight.detach().ne(0).any(dim=1)
    if up.bias is not None:
        alive |= up.bias.detach().ne(0)
    return ~alive


def _dead_heads(unit: HeadUnit) -> torch.Tensor:
    """Heads whose value rows and biases are exactly zero (they add nothing to the output)."""
    v = unit.proj("value")
    alive = v.weight.detach().reshape(unit.size, unit.head_size, -1).ne(0).flatten(1).any(dim=1)
    if v.bias is not None:
        alive |= v.bias.detach().reshape(unit.size, unit.head_size).ne(0).any(dim=1)
    return ~alive


def _keep(dead: torch.Tensor) -> torch.Tensor:
    keep = ~dead
    if not keep.any():
        keep[0] = True  # keep one (zero) unit: a 0-wide matrix is not a valid layer
    return keep


def _set_heads(unit: HeadUnit, keep_rows: torch.Tensor) -> None:
    paths = unit.adapter.projections(unit.layer)
    for which in ("query", "key", "value"):
        _set(unit.layer, paths[which], _new_linear(unit.proj(which), rows=keep_rows))
    _set(unit.layer, paths["out"], _new_linear(unit.proj("out"), cols=keep_rows))
    unit.adapter.set_head_count(unit.layer)


@torch.no_grad()
def shrink(model: nn.Module, scope: tuple[str, ...] | list[str] = SCOPES) -> dict[str, Any]:
    """Physically remove zeroed FFN neurons and heads. Returns the structure report (before/after)."""
    before = structure_report(model, scope)
    ffn, heads = find_units(model, scope)
    for u in ffn:
        alive = _keep(_dead_neurons(u))
        if alive.all():
            continue
        _set(u.parent, u.up_attr, _new_linear(u.up, rows=alive))
        _set(u.parent, u.down_attr, _new_linear(u.down, cols=alive))
    for u in heads:
        alive = _keep(_dead_heads(u))
        if alive.all():
            continue
        _set_heads(u, alive.repeat_interleave(u.head_size))
    after = structure_report(model, scope)
    return {"before": before, "after": after}


def structure_report(model: nn.Module, scope: tuple[str, ...] | list[str] = SCOPES) -> dict[str, Any]:
    """Widths of every unit, zeroed (prunable) counts, and the parameter count."""
    ffn, heads = find_units(model, scope)
    ffn_total = sum(u.size for u in ffn)
    ffn_zero = sum(int(_dead_neurons(u).sum()) for u in ffn)
    head_total = sum(u.size for u in heads)
    head_zero = sum(int(_dead_heads(u).sum()) for u in heads)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "ffn_neurons": ffn_total, "ffn_neurons_zeroed": ffn_zero,
        "heads": head_total, "heads_zeroed": head_zero,
        "ffn_widths": {u.name: u.size for u in ffn},
        "head_counts": {u.name: u.size for u in heads},
    }


# ----------------------------------------------------------------------------- fine-tuning callback
def load_init_weights(pl_module: L.LightningModule, ckpt_path: str | None) -> None:
    """Start pruning from a trained checkpoint's weights (prune a fine-tuned model, then fine-tune).

    Only the weights are taken (not the optimiser, schedule or epoch): the run is a new fine-tuning
    run whose schedule prunes the trained model.
    """
    if not ckpt_path:
        return
    from pathlib import Path

    if not Path(ckpt_path).is_file():
        raise MmsentiError(f"compression.init_from={ckpt_path}: no such checkpoint")
    state = read_checkpoint(ckpt_path, "compression.init_from")["state_dict"]
    problem = describe_mismatch(state_dict_mismatch(pl_module.state_dict(), state))
    if problem:
        raise MmsentiError(f"compression.init_from={ckpt_path} does not match the configured model "
                           f"({problem}); use the overrides it was trained with")
    pl_module.load_state_dict(state, strict=False)
    log.info("pruning starts from the weights of %s", ckpt_path)


class StructuredPruning(L.Callback):
    """Iterative structured pruning while fine-tuning: prune → fine-tune → prune more.

    At the start of each epoch listed in ``epochs`` the pruned fraction grows linearly towards
    ``ffn_amount`` / ``head_amount`` (reached at the last listed epoch); masks are re-applied after
    every optimiser step so pruned units stay zero. Checkpoints keep full shapes (zeros included);
    :func:`shrink` removes the zeros before export.
    """

    def __init__(self, ffn_amount: float = 0.4, head_amount: float = 0.0, epochs: list[int] | tuple[int, ...] = (0,),
                 scope: list[str] | tuple[str, ...] = SCOPES, multiple_of: int = 1, init_from: str | None = None):
        for what, value in (("ffn_amount", ffn_amount), ("head_amount", head_amount)):
            if not 0.0 <= value < 1.0:
                raise MmsentiError(f"compression.{what}={value}: must be in [0, 1)")
        self.ffn_amount = float(ffn_amount)
        self.head_amount = float(head_amount)
        self.epochs = sorted(int(e) for e in epochs) or [0]
        self.scope = tuple(scope)
        self.multiple_of = int(multiple_of)
        self.init_from = init_from
        self.masks: dict[str, torch.Tensor] = {}
        self.history: list[dict[str, Any]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        load_init_weights(pl_module, self.init_from)

    def fraction_at(self, epoch: int) -> float:
        """Share of the final amount reached at ``epoch`` (0 before the first pruning epoch)."""
        done = sum(1 for e in self.epochs if e <= epoch)
        return done / len(self.epochs)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch not in self.epochs:
            return
        share = self.fraction_at(epoch)
        self.masks = compute_masks(pl_module, self.ffn_amount * share, self.head_amount * share, self.scope, self.multiple_of)
        apply_masks(pl_module, self.masks, self.scope)
        report = structure_report(pl_module, self.scope)
        self.history.append({"epoch": epoch, "ffn_pruned": report["ffn_neurons_zeroed"], "ffn_total": report["ffn_neurons"],
                             "heads_pruned": report["heads_zeroed"], "heads_total": report["heads"]})
        log.info("structured pruning at epoch %d: %d/%d FFN neurons, %d/%d heads zeroed", epoch,
                 report["ffn_neurons_zeroed"], report["ffn_neurons"], report["heads_zeroed"], report["heads"])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.masks:
            apply_masks(pl_module, self.masks, self.scope)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint.setdefault("mmsenti_compression", {})["structured"] = {
            "ffn_amount": self.ffn_amount, "head_amount": self.head_amount, "history": list(self.history)}

    def state_dict(self) -> dict:
        return {"masks": {k: v.cpu() for k, v in self.masks.items()}, "history": list(self.history)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.masks = dict(state_dict.get("masks", {}))
        self.history = list(state_dict.get("history", []))
