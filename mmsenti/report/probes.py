"""What a trained model does with each modality: masking probes and cross-modal attention weights.

* :func:`modality_contribution` — the score change when one modality is hidden, over a data set
  (occlusion, Zeiler & Fergus, 2014, applied to whole modalities). A modality is hidden through the
  batch's own masks, the way the model sees a missing modality (:mod:`mmsenti.data.batch`): audio /
  vision get an all-False mask (and zero frames); text keeps only its first and last real token (the
  ``[CLS]``/``[SEP]`` of an empty sentence), since a text encoder cannot attend over no token at all.
* :class:`CrossAttentionProbe` — the attention weights of the last cross-modal block of each
  ``<source>_to_text`` stream of a MulT-style fusion (Tsai et al., 2019): which audio / vision
  frames each word attended to. :class:`~mmsenti.models.attention.MultiheadAttention` returns no
  weights (it runs one fused ``scaled_dot_product_attention``), so a forward hook recomputes them
  from the layer's inputs and its own projection weights, and checks the recomputation by rebuilding
  the layer's output from them: a layer that computes something else is reported, never drawn.

Nothing here edits the model; both work on any :class:`~mmsenti.models.SentimentModel`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mmsenti.data.batch import SentimentBatch
from mmsenti.models.attention import MultiheadAttention

# a cross-modal stream's attention inside a fusion: ``cross.audio_to_text.1.attn`` (mult),
# ``cross.audio_to_text.layers.4.self_attn`` (mult_paper)
STREAM_PATTERN = re.compile(r"(?:^|\.)(?P<source>[a-z]+)_to_(?P<target>[a-z]+)\.(?:[a-z_]+\.)*?(?P<layer>\d+)\.")
RECONSTRUCTION_TOLERANCE = 1e-4


def model_inputs(batch: SentimentBatch) -> dict[str, torch.Tensor]:
    """The named tensors :meth:`SentimentModel.forward` takes."""
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "audio": batch.audio,
            "audio_mask": batch.audio_mask, "vision": batch.vision, "vision_mask": batch.vision_mask}


def hide_modality(batch: SentimentBatch, modality: str) -> SentimentBatch:
    """A copy of ``batch`` with ``modality`` hidden through its masks (see the module docstring)."""
    if modality in ("audio", "vision"):
        mask = getattr(batch, f"{modality}_mask")
        return dataclasses.replace(batch, **{modality: torch.zeros_like(getattr(batch, modality)),
                                             f"{modality}_mask": torch.zeros_like(mask)})
    if modality == "text":
        mask = batch.attention_mask
        last = (mask.sum(1) - 1).clamp(min=0)
        kept = torch.zeros_like(mask)
        kept[:, 0] = 1
        kept[torch.arange(mask.shape[0]), last] = 1
        return dataclasses.replace(batch, attention_mask=kept * mask)
    raise ValueError(f"modality {modality!r}: text, audio or vision")


@torch.no_grad()
def modality_contribution(model: torch.nn.Module, batches: Iterable[SentimentBatch], task: str = "regression",
                          progress: bool = True, total: int | None = None) -> dict[str, dict[str, float]]:
    """Per modality of ``model``: how the score moves when it is hidden, over every batch.

    Returns ``{modality: {"mean_abs_change", "mean_change", "metric_full", "metric_hidden", "present"}}``;
    ``metric`` is the MAE (regression) or the binary accuracy on ``label > 0`` (classification), with
    every modality shown and with this one hidden; ``present`` counts the samples that carry the modality.
    """
    from tqdm.auto import tqdm

    modalities = list(getattr(model, "modalities", ["text"]))
    full, labels = [], []
    hidden: dict[str, list[torch.Tensor]] = {m: [] for m in modalities}
    present = {m: 0 for m in modalities}
    for batch in tqdm(batches, desc="modality masking", unit="batch", total=total, disable=not progress, dynamic_ncols=True):
        full.append(model(**model_inputs(batch)).score.float())
        labels.append(batch.labels.float())
        for m in modalities:
            hidden[m].append(model(**model_inputs(hide_modality(batch, m))).score.float())
            mask = batch.attention_mask if m == "text" else getattr(batch, f"{m}_mask")
            present[m] += int(mask.bool().any(dim=1).sum())
    if not full:
        return {}
    score, y = torch.cat(full).numpy(), torch.cat(labels).numpy()

    def metric(pred: np.ndarray) -> float:
        known = np.isfinite(y)
        if task == "classification":
            return float(np.mean((pred[known] > 0) == (y[known] > 0)))
        return float(np.mean(np.abs(pred[known] - y[known])))

    out = {}
    for m in modalities:
        h = torch.cat(hidden[m]).numpy()
        out[m] = {"mean_abs_change": float(np.mean(np.abs(h - score))), "mean_change": float(np.mean(h - score)),
                  "metric_full": metric(score), "metric_hidden": metric(h), "present": present[m]}
    return out


@dataclasses.dataclass
class AttentionCapture:
    """One hooked layer's head-averaged weights ``[B, T_text, T_source]`` and how well they rebuilt its output."""

    source: str
    layer: int
    name: str
    weights: torch.Tensor | None = None
    error: float | None = None  # max |rebuilt output − the layer's output|


def cross_attention_layers(fusion: torch.nn.Module, target: str = "text") -> dict[str, tuple[int, str, MultiheadAttention]]:
    """``{source: (layer, module path, attention)}``: the last cross-modal attention of each ``<source>_to_<target>`` stream."""
    found: dict[str, tuple[int, str, MultiheadAttention]] = {}
    for name, module in fusion.named_modules():
        match = STREAM_PATTERN.search(name + ".")
        if not isinstance(module, MultiheadAttention) or match is None or match["target"] != target:
            continue
        layer = int(match["layer"])
        if match["source"] not in found or layer > found[match["source"]][0]:
            found[match["source"]] = (layer, name, module)
    return found


def _recompute(module: MultiheadAttention, args: tuple, kwargs: dict[str, Any], output: torch.Tensor):
    """Softmax(q kᵀ / √d_head) of one attention call, and the max error of the output rebuilt from it."""
    query = args[0]
    key_value = args[1] if len(args) > 1 else kwargs["key_value"]
    padding = args[2] if len(args) > 2 else kwargs.get("key_padding_mask")
    d, heads, head_dim = module.embed_dim, module.num_heads, module.head_dim
    w, b = module.in_proj_weight, module.in_proj_bias
    q = F.linear(query, w[:d], b[:d])
    k = F.linear(key_value, w[d:2 * d], b[d:2 * d])
    v = F.linear(key_value, w[2 * d:], b[2 * d:])

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], heads, head_dim).transpose(1, 2)

    logits = split(q) @ split(k).transpose(-1, -2) / math.sqrt(head_dim)
    if padding is not None:
        logits = logits.masked_fill(padding[:, None, None, :].bool(), float("-inf"))
    weights = logits.softmax(dim=-1)  # [B, H, Tq, S]
    rebuilt = module.out_proj((weights @ split(v)).transpose(1, 2).reshape(query.shape[0], query.shape[1], d))
    return weights.mean(dim=1), float((rebuilt - output).abs().max())


class CrossAttentionProbe:
    """``with CrossAttentionProbe(model.fusion) as probe: model(...)`` → ``probe.captures[source]``.

    Hooks the last cross-modal attention of each ``<source>_to_text`` stream (see the module docstring);
    ``probe.captures`` is empty for a fusion without such streams (``text_only``, ``late``, ``tfn``, ...).
    """

    def __init__(self, fusion: torch.nn.Module, target: str = "text"):
        self.layers = cross_attention_layers(fusion, target)
        self.captures = {s: AttentionCapture(s, layer, name) for s, (layer, name, _) in self.layers.items()}
        self._handles: list[Any] = []

    def __enter__(self) -> "CrossAttentionProbe":
        for source, (_, _, module) in self.layers.items():
            def hook(module, args, kwargs, output, source=source):
                weights, error = _recompute(module, args, kwargs, output)
                self.captures[source].weights, self.captures[source].error = weights.detach(), error
            self._handles.append(module.register_forward_hook(hook, with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def faithful(self, tolerance: float = RECONSTRUCTION_TOLERANCE) -> dict[str, str]:
        """``{source: reason}`` for every capture that cannot be drawn (empty: all are the layer's true weights)."""
        problems = {}
        for source, capture in self.captures.items():
            if capture.weights is None:
                problems[source] = f"{capture.name} did not run"
            elif capture.error is None or not capture.error <= tolerance:
                problems[source] = (f"{capture.name}: softmax(q·kᵀ/√d) does not rebuild the layer's output "
                                    f"(max error {capture.error:.2g} > {tolerance:g}); the layer computes something else")
        return problems
