"""Low-rank factorisation: ``nn.Linear`` layers replaced by two thin layers from a truncated SVD.

A dense layer ``y = W x + b`` (``W``: ``m x n``) with ``W = U S Vᵀ`` becomes ``in -> r -> out``:
the first layer's weight is ``sqrt(S_r) V_rᵀ`` (``r x n``, no bias), the second's ``U_r sqrt(S_r)``
(``m x r``, with ``b``), so ``second(first(x)) = U_r S_r V_rᵀ x + b``. By Eckart–Young–Mirsky this is
the best rank-``r`` approximation of ``W`` in both norms: the spectral-norm error is ``s_{r+1}``, the
Frobenius error ``sqrt(Σ_{i>r} s_i²)`` (Denton et al., "Exploiting linear structure within
convolutional networks for efficient evaluation", NeurIPS 2014; Xue et al., "Restructuring of deep
neural network acoustic models with singular value decomposition", Interspeech 2013). A layer is
only factorised when it saves parameters, ``r (m + n) < m n`` (per token that is also FLOPs: a
Linear costs ``2 m n`` multiply-adds per row, the pair ``2 r (m + n)``).

The rank of each layer, either

* by **retained spectral energy** (:func:`energy_rank`): the smallest ``r`` with
  ``Σ_{i<=r} s_i² / Σ_i s_i² >= energy``, layer by layer; or
* by a **global parameter budget** (:func:`budget_ranks`): keep a fraction ``budget`` of the weight
  parameters of the layers in scope, shared across layers — singular values of all layers are
  kept greedily by the energy share they retain per parameter they cost (``(s_i² / Σ s²) / (m + n)``)
  until the budget is spent, each layer up to the largest rank that still saves parameters (budget
  left over keeps such a layer dense, i.e. exact). For Linear layers that see the same tokens a
  parameter budget is a FLOP budget.

Which layers: every ``nn.Linear`` whose qualified name (inside the :class:`SentimentModel`) matches an
``include`` pattern and no ``exclude`` pattern (:func:`fnmatch.fnmatch`; ``*`` also crosses dots) —
by default the text encoder's attention and FFN projections and the fusion blocks. Linears inside
PyTorch's ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` are never touched (their fast
paths read ``.weight`` directly).

Where it runs:

* :func:`factorise` — one shot on a model (after :func:`~mmsenti.compression.structured.prune_structured`
  when composing: prune, then factorise; INT8 at export, as for any model).
* :class:`LowRankFactorisation` (``compression=lowrank``) — a callback that factorises at
  ``setup("fit")``, before the optimiser is built, so training continues on the factorised model
  (recovery fine-tuning). ``compression.init_from`` starts from a trained checkpoint (and, when that
  one was structurally pruned, removes the pruned units first); distillation from the unfactorised
  model is ``experiment=... compression=lowrank compression.init_from=<ckpt> distill.teacher_ckpt=<ckpt>``
  (the ``distill`` module, unchanged). Checkpoints record the ranks
  (``mmsenti_compression.lowrank``); :func:`mmsenti.models.checkpoint.load_sentiment_checkpoint`
  rebuilds the factorised layers from them.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Any

import lightning as L
import torch
from torch import nn

from mmsenti.compression.structured import load_init_weights
from mmsenti.compression.structured import shrink as shrink_structures
from mmsenti.errors import MmsentiError
from mmsenti.models.checkpoint import low_rank_ranks
from mmsenti.models.layers import LowRankLinear

log = logging.getLogger(__name__)

# the text encoder's attention/FFN projections (any architecture's layers) and the fusion blocks; the
# fusion's input projections (as INT8 keeps them fp32: mmsenti.export.quantize.DEFAULT_EXCLUDE), the
# encoder's pooler and the head stay dense
DEFAULT_INCLUDE: tuple[str, ...] = ("text_encoder.backbone.*", "fusion.*")
DEFAULT_EXCLUDE: tuple[str, ...] = ("fusion.inputs.*", "*.pooler.*")
RECORD_KEY = "lowrank"  # under checkpoint["mmsenti_compression"]


@dataclass
class LayerPlan:
    """What :func:`plan_ranks` decided for one layer: ``rank`` is ``None`` when it stays dense."""

    out_features: int
    in_features: int
    rank: int | None
    energy_kept: float  # Σ_{i<=rank} s_i² / Σ s_i² (1.0 when dense)
    reason: str = ""  # why it stays dense

    @property
    def dense_params(self) -> int:
        return self.out_features * self.in_features

    @property
    def params(self) -> int:
        return self.dense_params if self.rank is None else self.rank * (self.out_features + self.in_features)


# ----------------------------------------------------------------------------- ranks
def saves_parameters(rank: int, out_features: int, in_features: int) -> bool:
    """``r (m + n) < m n``: the two thin layers hold fewer weights than the dense one."""
    return rank * (out_features + in_features) < out_features * in_features


def energy_profile(singular_values: torch.Tensor) -> torch.Tensor:
    """``Σ_{i<=r} s_i² / Σ s_i²`` for r = 1..k (the last entry is 1)."""
    s2 = singular_values.double().square()
    total = s2.sum()
    if total <= 0:
        return torch.ones_like(s2)
    return s2.cumsum(0) / total


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """The smallest ``r`` whose top singular values retain ``energy`` of ``Σ s_i²`` (at least 1)."""
    if not 0.0 < energy <= 1.0:
        raise MmsentiError(f"compression.energy={energy}: must be in (0, 1]")
    profile = energy_profile(singular_values)
    # a relative tolerance: energy=1.0 must reach the full rank despite rounding in the cumulative sum
    return min(int((profile < energy - 1e-12).sum()) + 1, int(profile.numel()))


def _round_up(rank: int, multiple_of: int, cap: int) -> int:
    if multiple_of > 1:
        rank = -(-rank // multiple_of) * multiple_of
    return max(1, min(rank, cap))


def largest_saving_rank(out_features: int, in_features: int) -> int:
    """The largest ``r`` with ``r (m + n) < m n`` (0 when even rank 1 saves nothing)."""
    return (out_features * in_features - 1) // (out_features + in_features)


def budget_ranks(spectra: Mapping[str, tuple[torch.Tensor, int, int]], budget: float) -> dict[str, int | None]:
    """Ranks under one parameter budget shared by all layers (``None``: the layer stays dense).

    ``spectra``: name -> (singular values, out_features, in_features); ``budget``: the fraction of
    those layers' dense weight parameters to keep. Every layer that can save parameters starts at
    rank 1 (one that cannot stays dense and is charged ``m n``); then singular values are taken
    greedily by retained energy share per parameter, ``(s_i² / Σ s²) / (m + n)``, while they fit,
    each layer up to its largest saving rank. Budget left at the end turns layers that reached that
    rank back into the (exact) dense layer, when it covers the difference.
    """
    if not 0.0 < budget <= 1.0:
        raise MmsentiError(f"compression.budget={budget}: must be in (0, 1] (the fraction of the in-scope weights kept)")
    dims = {name: (m, n) for name, (_, m, n) in spectra.items()}
    caps = {name: min(largest_saving_rank(m, n), int(s.numel())) for name, (s, m, n) in spectra.items()}
    total = sum(m * n for m, n in dims.values())
    available = budget * total
    ranks: dict[str, int | None] = {name: (1 if caps[name] >= 1 else None) for name in spectra}
    used = sum(dims[n][0] * dims[n][1] if r is None else sum(dims[n]) for n, r in ranks.items())
    if used > available:
        raise MmsentiError(f"compression.budget={budget}: too small; rank 1 in every layer in scope already needs "
                           f"{used / total:.4f} of their weights — raise the budget or narrow compression.include")
    shares = {name: energy_profile(s).diff(prepend=torch.zeros(1, dtype=torch.float64)) for name, (s, _, _) in spectra.items()}
    heap = [(-float(shares[n][1]) / sum(dims[n]), n, 1) for n, r in ranks.items() if r is not None and caps[n] > 1]
    heapq.heapify(heap)
    while heap:
        _, name, i = heapq.heappop(heap)
        cost = sum(dims[name])
        if used + cost > available:
            continue  # its later values cost the same and are worth less: this layer is full
        used += cost
        ranks[name] = i + 1
        if i + 1 < caps[name]:
            heapq.heappush(heap, (-float(shares[name][i + 1]) / cost, name, i + 1))
    for name, rank in ranks.items():  # budget left over: a layer at its largest saving rank may as well stay exact
        m, n = dims[name]
        if rank is not None and rank == caps[name] and used + m * n - rank * (m + n) <= available:
            used += m * n - rank * (m + n)
            ranks[name] = None
    return ranks


# ----------------------------------------------------------------------------- layers in scope
def candidate_layers(model: nn.Module, include: Sequence[str] = DEFAULT_INCLUDE,
                     exclude: Sequence[str] = DEFAULT_EXCLUDE) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` layers of ``model`` in scope, by qualified name (see the module docstring)."""
    torch_fast_paths = {id(m) for parent in model.modules() if isinstance(parent, (nn.MultiheadAttention, nn.TransformerEncoderLayer))
                        for m in parent.modules()}
    return {name: m for name, m in model.named_modules()
            if type(m) is nn.Linear and id(m) not in torch_fast_paths  # not NonDynamicallyQuantizableLinear & co
            and any(fnmatch(name, p) for p in include) and not any(fnmatch(name, p) for p in exclude)}


@torch.no_grad()
def svd(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``U, S, Vᵀ`` of the layer's weight (thin SVD, float64 on the CPU)."""
    return torch.linalg.svd(linear.weight.detach().double().cpu(), full_matrices=False)


def plan_ranks(model: nn.Module, energy: float | None = 0.9, budget: float | None = None,
               include: Sequence[str] = DEFAULT_INCLUDE, exclude: Sequence[str] = DEFAULT_EXCLUDE,
               multiple_of: int = 1, svds: dict[str, tuple[torch.Tensor, ...]] | None = None) -> dict[str, LayerPlan]:
    """The rank of every layer in scope, by ``energy`` or (when given) by the global ``budget``.

    ``svds``: a dict filled with each layer's :func:`svd` (computed here when missing), so that
    :func:`factorise` decomposes every matrix once.
    """
    layers = candidate_layers(model, include, exclude)
    if not layers:
        raise MmsentiError(f"compression=lowrank: no nn.Linear layer matches include={list(include)} minus exclude={list(exclude)}")
    svds = {} if svds is None else svds
    for name, m in layers.items():
        if name not in svds:
            svds[name] = svd(m)
    spectra = {name: (svds[name][1], m.out_features, m.in_features) for name, m in layers.items()}
    if budget is not None:
        chosen = budget_ranks(spectra, float(budget))
    elif energy is not None:
        chosen = {name: energy_rank(s, float(energy)) for name, (s, _, _) in spectra.items()}
    else:
        raise MmsentiError("compression=lowrank: set compression.energy or compression.budget")
    plans = {}
    for name, (s, m, n) in spectra.items():
        rank = chosen[name]
        reason = "" if rank is not None else "the budget keeps it whole"
        if rank is not None:
            rank = _round_up(rank, int(multiple_of), min(m, n))
            if not saves_parameters(rank, m, n):
                reason = f"rank {rank} would not save parameters ({rank}*({m}+{n}) >= {m}*{n})"
                rank = None
        kept = 1.0 if rank is None else float(energy_profile(s)[rank - 1])
        plans[name] = LayerPlan(m, n, rank, kept, reason)
    return plans


# ----------------------------------------------------------------------------- factorising
@torch.no_grad()
def factorise_linear(linear: nn.Linear, rank: int, decomposition: tuple[torch.Tensor, ...] | None = None) -> LowRankLinear:
    """``linear`` as ``second(first(x))`` from its rank-``rank`` truncated SVD (balanced: each gets ``sqrt(S)``).

    ``decomposition``: the layer's :func:`svd` when already computed.
    """
    w = linear.weight.detach()
    u, s, vh = decomposition if decomposition is not None else svd(linear)
    root = s[:rank].sqrt()
    new = LowRankLinear(linear.in_features, linear.out_features, rank, bias=linear.bias is not None, device=w.device, dtype=w.dtype)
    new.first.weight.copy_((root[:, None] * vh[:rank]).to(w))
    new.second.weight.copy_((u[:, :rank] * root).to(w))
    if linear.bias is not None:
        new.second.bias.copy_(linear.bias.detach())
        new.second.bias.requires_grad_(linear.bias.requires_grad)
    new.first.weight.requires_grad_(linear.weight.requires_grad)
    new.second.weight.requires_grad_(linear.weight.requires_grad)
    new.train(linear.training)
    return new


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def factorise(model: nn.Module, energy: float | None = 0.9, budget: float | None = None,
              include: Sequence[str] = DEFAULT_INCLUDE, exclude: Sequence[str] = DEFAULT_EXCLUDE,
              multiple_of: int = 1) -> dict[str, Any]:
    """Factorise the layers in scope of ``model`` in place; returns the report (ranks, parameter counts).

    Compose with structured pruning by pruning (and shrinking) first: an SVD does not keep a pruned
    neuron's row exactly zero, so it could no longer be removed.
    """
    params_before = sum(p.numel() for p in model.parameters())
    svds: dict[str, tuple[torch.Tensor, ...]] = {}
    plans = plan_ranks(model, energy, budget, include, exclude, multiple_of, svds)
    for name, plan in plans.items():
        if plan.rank is not None:
            _replace(model, name, factorise_linear(model.get_submodule(name), plan.rank, svds[name]))
    report = low_rank_report(model, plans)
    report["params_before"] = params_before
    report["settings"] = {"energy": energy if budget is None else None, "budget": budget, "include": list(include),
                          "exclude": list(exclude), "multiple_of": int(multiple_of)}
    log.info("low-rank: %d of %d layers factorised; parameters %.2f M -> %.2f M", report["layers_factorised"],
             len(plans), params_before / 1e6, report["params"] / 1e6)
    return report


def low_rank_report(model: nn.Module, plans: Mapping[str, LayerPlan] | None = None) -> dict[str, Any]:
    """Ranks of the factorised layers, parameter counts, and (given the plans) what stayed dense and why."""
    ranks = low_rank_ranks(model)
    report: dict[str, Any] = {"ranks": ranks, "layers_factorised": len(ranks), "params": sum(p.numel() for p in model.parameters())}
    if plans is not None:
        report["in_scope_dense_params"] = sum(p.dense_params for p in plans.values())
        report["in_scope_params"] = sum(p.params for p in plans.values())
        report["energy_kept"] = {n: round(p.energy_kept, 6) for n, p in plans.items() if p.rank is not None}
        report["left_dense"] = {n: p.reason for n, p in plans.items() if p.rank is None}
    return report


# ----------------------------------------------------------------------------- training callback
class LowRankFactorisation(L.Callback):
    """``compression=lowrank``: factorise ``pl_module.net`` at ``setup("fit")``, then fine-tune it.

    Runs before the optimiser is built, so the optimiser (and ``configure_optimizers``' parameter
    groups) see the thin layers; frozen layers stay frozen. Order: ``init_from`` weights (if any),
    structurally pruned units removed (prune, then factorise), SVD. A module that is already
    factorised (a resumed run: ``train.py`` rebuilds the checkpoint's structure first, see
    :func:`mmsenti.models.checkpoint.match_checkpoint_structure`) is left as it is. Every checkpoint
    records the ranks under ``mmsenti_compression.lowrank``.
    """

    def __init__(self, energy: float | None = 0.9, budget: float | None = None,
                 include: Sequence[str] = DEFAULT_INCLUDE, exclude: Sequence[str] = DEFAULT_EXCLUDE,
                 multiple_of: int = 1, init_from: str | None = None):
        if energy is not None and not 0.0 < float(energy) <= 1.0:
            raise MmsentiError(f"compression.energy={energy}: must be in (0, 1]")
        if budget is not None and not 0.0 < float(budget) <= 1.0:
            raise MmsentiError(f"compression.budget={budget}: must be in (0, 1] (the fraction of the in-scope weights kept)")
        if energy is None and budget is None:
            raise MmsentiError("compression=lowrank: set compression.energy or compression.budget")
        self.energy = None if energy is None else float(energy)
        self.budget = None if budget is None else float(budget)
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.multiple_of = int(multiple_of)
        self.init_from = init_from
        self.report: dict[str, Any] = {}

    @staticmethod
    def _net(pl_module: L.LightningModule) -> nn.Module:
        return getattr(pl_module, "net", pl_module)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        net = self._net(pl_module)
        if low_rank_ranks(net):  # resumed (structure rebuilt from the checkpoint) or factorised already
            self.report = self.report or low_rank_report(net)
            return
        load_init_weights(pl_module, self.init_from)
        shrink_structures(net)  # pruned (zeroed) units go first: an SVD would smear them
        self.report = factorise(net, self.energy, self.budget, self.include, self.exclude, self.multiple_of)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        record = {"ranks": low_rank_ranks(self._net(pl_module)), "energy": self.energy, "budget": self.budget,
                  "include": list(self.include), "exclude": list(self.exclude), "multiple_of": self.multiple_of}
        for key in ("params_before", "params"):
            if key in self.report:
                record[key] = int(self.report[key])
        checkpoint.setdefault("mmsenti_compression", {})[RECORD_KEY] = record

    def state_dict(self) -> dict:
        return {"report": {k: v for k, v in self.report.items() if k in ("ranks", "params_before", "params", "layers_factorised")}}

    def load_state_dict(self, state_dict: dict) -> None:
        self.report = dict(state_dict.get("report") or {})


__all__ = ["DEFAULT_EXCLUDE", "DEFAULT_INCLUDE", "LayerPlan", "LowRankFactorisation", "LowRankLinear", "budget_ranks",
           "candidate_layers", "energy_rank", "factorise", "factorise_linear", "low_rank_report", "plan_ranks",
           "saves_parameters", "svd"]
