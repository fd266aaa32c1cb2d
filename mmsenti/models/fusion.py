"""Fusion modules: how encoded modalities become one utterance vector.

All take ``states: dict[modality, [B, T, d]]`` and ``masks: dict[modality, [B, T] bool]`` for the
modalities the model was built with and return ``[B, out_dim]``. Registered names:

* ``text_only`` — masked mean of the text states (the fast path's fusion).
* ``late`` — masked mean of every modality, concatenated, then an MLP.
* ``mult`` — MulT-style cross-modal attention (Tsai et al., 2019): each target modality queries
  every other one through cross-modal transformer blocks, the results are concatenated and passed
  through self-attention, then pooled.
"""

from __future__ import annotations

import torch
from torch import nn

from mmsenti.models.encoders import SinusoidalPositions, masked_mean, safe_key_padding
from mmsenti.models.attention import MultiheadAttention, TransformerEncoder, TransformerEncoderLayer
from mmsenti.registry import register


class _InputProjection(nn.Module):
    """Projects every modality to a common width and adds positions."""

    def __init__(self, input_dims: dict[str, int], d_model: int):
        super().__init__()
        self.proj = nn.ModuleDict({m: nn.Linear(d, d_model) for m, d in input_dims.items()})
        self.positions = SinusoidalPositions(d_model)

    def forward(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: self.positions(self.proj[m](h)) for m, h in states.items()}


@register("fusion", "text_only")
class TextOnlyFusion(nn.Module):
    """The text-only fast path: masked mean of the text encoder's token states."""

    def __init__(self, input_dims: dict[str, int], **_: object):
        super().__init__()
        self.out_dim = input_dims["text"]

    def forward(self, states: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        return masked_mean(states["text"], masks["text"])


@register("fusion", "late")
class LateFusion(nn.Module):
    """Late fusion: each modality's masked mean, concatenated, through an MLP."""

    def __init__(self, input_dims: dict[str, int], d_model: int = 64, dropout: float = 0.1, **_: object):
        super().__init__()
        self.modalities = list(input_dims)
        total = sum(input_dims.values())
        self.mlp = nn.Sequential(nn.Linear(total, d_model), nn.GELU(), nn.Dropout(dropout))
        self.out_dim = d_model

    def forward(self, states: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        pooled = [masked_mean(states[m], masks[m]) for m in self.modalities]
        return self.mlp(torch.cat(pooled, dim=-1))


class CrossModalBlock(nn.Module):
    """Pre-norm block: the target sequence attends to a source sequence, then a feed-forward layer."""

    def __init__(self, d_model: int, num_heads: int, dropout: float):
        super().__init__()
        self.norm_q = nn.LayerNorm(d_model)
        self.norm_kv = nn.LayerNorm(d_model)
        self.attn = MultiheadAttention(d_model, num_heads, dropout)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d_model, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, target: torch.Tensor, source: torch.Tensor, key_padding: torch.Tensor, has_source: torch.Tensor) -> torch.Tensor:
        """``key_padding``: :func:`safe_key_padding` of the source mask; ``has_source``: ``[B, 1, 1]``, 0 where the
        source has no valid frame (a missing modality must add nothing). Both come from the source mask once
        per forward pass (:meth:`MulTFusion.forward`), not once per block."""
        kv = self.norm_kv(source)
        attended = self.attn(self.norm_q(target), kv, key_padding_mask=key_padding)
        target = target + self.dropout(attended) * has_source
        return target + self.dropout(self.ff(self.norm_ff(target)))


@register("fusion", "mult")
class MulTFusion(nn.Module):
    """Cross-modal transformer fusion in the MulT style, with masks respected everywhere."""

    def __init__(self, input_dims: dict[str, int], d_model: int = 64, num_layers: int = 2, num_heads: int = 4,
                 self_layers: int = 1, dropout: float = 0.1, **_: object):
        super().__init__()
        self.modalities = list(input_dims)
        self.inputs = _InputProjection(input_dims, d_model)
        pairs = [(t, s) for t in self.modalities for s in self.modalities if s != t]
        self.cross = nn.ModuleDict({
            f"{s}_to_{t}": nn.ModuleList([CrossModalBlock(d_model, num_heads, dropout) for _ in range(num_layers)])
            for t, s in pairs
        })
        n_sources = max(1, len(self.modalities) - 1)
        width = d_model * n_sources
        self.self_attn = nn.ModuleDict({
            t: TransformerEncoder(TransformerEncoderLayer(width, num_heads, 4 * width, dropout), self_layers)
            for t in self.modalities
        })
        self.out_dim = width * len(self.modalities)

    def forward(self, states: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.inputs(states)
        padding = {m: safe_key_padding(masks[m]) for m in self.modalities}
        present = {m: masks[m].any(dim=1).to(h[m].dtype).view(-1, 1, 1) for m in self.modalities}
        pooled = []
        for t in self.modalities:
            sources = [s for s in self.modalities if s != t] or [t]
            streams = []
            for s in sources:
                x = h[t]
                if s != t:  # a single-modality model has no cross stream: plain self-attention
                    for block in self.cross[f"{s}_to_{t}"]:
                        x = block(x, h[s], padding[s], present[s])
                streams.append(x)
            x = torch.cat(streams, dim=-1)
            x = self.self_attn[t](x, src_key_padding_mask=padding[t])
            pooled.append(masked_mean(x, masks[t]))
        return torch.cat(pooled, dim=-1)
