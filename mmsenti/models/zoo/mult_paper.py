"""``mult_paper``: the Multimodal Transformer as published.

Tsai, Bai, Liang, Kolter, Morency, Salakhutdinov. *Multimodal Transformer for Unaligned Multimodal
Language Sequences.* ACL 2019 (https://aclanthology.org/P19-1656/); the authors' code is
yaohungt/Multimodal-Transformer (``src/models.py``, ``modules/transformer.py``).

Beside the project's ``mult`` (:class:`mmsenti.models.fusion.MulTFusion`), which keeps MulT's idea and
departs from its configuration; each departure is a switch here (``configs/model/fusion/mult_paper.yaml``):

==========================  ===================================  =====================================
switch                      ``mult_paper`` default (the paper)   ``mult``
==========================  ===================================  =====================================
``final_norm``              LayerNorm after every encoder         none
``embed_scale``             inputs scaled by sqrt(d)              no scale
``embed_dropout``           0.25 on every encoder's input         none
``self_layers``             3 self-attention layers               1
``pooling``                 ``last`` valid time step              ``mean`` over the valid steps
``output_block``            residual Linear-ReLU-Linear block     none
==========================  ===================================  =====================================

Not switches (the blocks differ): MulT's layers use one LayerNorm for the query and the key/value and
a ReLU feed-forward (``mult``: separate norms, GELU), add the positions in every encoder (``mult``: once).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mmsenti.errors import MmsentiError
from mmsenti.models.attention import TransformerEncoderLayer
from mmsenti.models.encoders import SinusoidalPositions, masked_mean, safe_key_padding
from mmsenti.registry import register

POOLINGS = ("last", "mean")


def last_valid_step(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x [B, T, d]`` at each row's last valid step of ``mask [B, T]`` (MulT's ``h[-1]`` on unpadded sequences);
    an all-false row gives zeros."""
    steps = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask, steps, torch.zeros_like(steps)).amax(dim=1)  # [B]
    picked = x.gather(1, last.view(-1, 1, 1).expand(-1, 1, x.shape[-1])).squeeze(1)
    return picked * mask.any(dim=1, keepdim=True).to(x.dtype)


class CrossModalLayer(TransformerEncoderLayer):
    """MulT's cross-modal layer: pre-norm, the target queries the source, ``norm1`` normalising both (as in the
    authors' ``TransformerEncoderLayer``: ``layer_norms[0]`` for x, x_k and x_v), then a ReLU feed-forward.

    ``present [B, 1, 1]``: 0 where the source has no valid frame, so a missing modality adds nothing."""

    def forward(self, x: torch.Tensor, source: torch.Tensor, key_padding: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        attended = self.self_attn(self.norm1(x), self.norm1(source), key_padding)
        x = x + self.dropout1(attended) * present
        return x + self.dropout2(self.linear2(self.dropout(torch.relu(self.linear1(self.norm2(x))))))


class PaperEncoder(nn.Module):
    """MulT's ``TransformerEncoder``: ``scale · x`` + positions, embedding dropout, the layers, a final LayerNorm.

    With a ``source`` the layers are cross-modal (the source embedded the same way, once); without, self-attention."""

    def __init__(self, d_model: int, num_heads: int, num_layers: int, dropout: float, attn_dropout: float,
                 embed_dropout: float, embed_scale: bool, final_norm: bool, cross: bool):
        super().__init__()
        kind = CrossModalLayer if cross else TransformerEncoderLayer
        self.layers = nn.ModuleList([kind(d_model, num_heads, 4 * d_model, dropout) for _ in range(num_layers)])
        for layer in self.layers:
            layer.self_attn.dropout = attn_dropout  # MulT's attn_dropout, apart from the ReLU / residual dropout
        self.scale = math.sqrt(d_model) if embed_scale else 1.0
        self.positions = SinusoidalPositions(d_model)
        self.embed_dropout = nn.Dropout(embed_dropout)
        self.norm = nn.LayerNorm(d_model) if final_norm else None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_dropout(self.positions(self.scale * x))

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor, source: torch.Tensor | None = None,
                present: torch.Tensor | None = None) -> torch.Tensor:
        """``key_padding``: the source's (cross-modal) or the target's own (self-attention) padding mask."""
        x = self.embed(x)
        if source is not None:
            source = self.embed(source)
            for layer in self.layers:
                x = layer(x, source, key_padding, present)
        else:
            for layer in self.layers:
                x = layer(x, key_padding)
        return self.norm(x) if self.norm is not None else x


@register("fusion", "mult_paper")
class MulTPaperFusion(nn.Module):
    """The Multimodal Transformer as published (Tsai et al., ACL 2019): final LayerNorms, 3 self-attention layers, last step.

    Each modality is projected to ``d_model`` (MulT's bias-free 1x1 Conv1d, a bias-free Linear here); for each
    target modality, one cross-modal encoder of ``num_layers`` layers per other (source) modality, the
    target's streams concatenated (``2·d_model``) and passed through a self-attention encoder of
    ``self_layers`` layers (MulT's ``trans_*_mem``); each encoder scales its inputs by sqrt(d), adds
    positions, applies ``embed_dropout`` and ends in a LayerNorm; the text states get ``embed_dropout`` before
    the projection too (the authors' ``F.dropout(x_l)``). The result is pooled at the ``last`` valid step
    (MulT's ``h[-1]``) or by the masked ``mean``; the targets' vectors are concatenated and, with
    ``output_block``, passed through MulT's residual block ``h + proj2(dropout(relu(proj1(h))))``
    (``out_dropout``); ``out_dim = 2·d_model·3``. The switches that make this ``mult`` are in the module docstring.

    Deviations from the paper and its code (not switches):

    * Padding masks everywhere: every attention skips padded frames, ``last`` is the last *valid* step, and a
      missing modality (all-false mask) adds nothing to the others (MulT's data has no padding masks; its
      ``h[-1]`` on padded batches is a padding frame).
    * One attention dropout ``attn_dropout`` for every target (the defaults of the authors' main.py: 0.1 for text, 0 for
      audio / vision), one ``dropout`` for the ReLU and residual dropouts (theirs: 0.1 and 0.1).
    * ``self_layers`` is the number of self-attention layers (default 3: the paper's; the authors' code builds
      ``max(nlevels, 3)``, 5 at its default ``nlevels`` 5). ``num_layers`` cross-modal layers (theirs 5;
      ``experiment=mosi_fusion`` sets 2), ``d_model`` per modality (theirs 30 with 5 heads; the yaml's 4 heads
      divide ``experiment=mosi_fusion``'s 64).
    * Positions: the project's :class:`~mmsenti.models.encoders.SinusoidalPositions` from step 0 (fairseq's
      table in MulT's code, offset by its padding index); the output layer is
      :class:`~mmsenti.models.SentimentModel`'s shared head.
    * Modalities: any subset the model was built with (text always); one modality is self-attention only.
    """

    def __init__(self, input_dims: dict[str, int], d_model: int = 30, num_layers: int = 5, num_heads: int = 5,
                 self_layers: int = 3, dropout: float = 0.1, attn_dropout: float = 0.1, embed_dropout: float = 0.25,
                 out_dropout: float = 0.0, embed_scale: bool = True, final_norm: bool = True, pooling: str = "last",
                 output_block: bool = True):
        super().__init__()
        if pooling not in POOLINGS:
            raise MmsentiError(f"model.net.fusion.pooling={pooling!r}; choose one of {list(POOLINGS)}")
        if num_layers < 1 or self_layers < 1:
            raise MmsentiError(f"model.net.fusion.num_layers={num_layers}, self_layers={self_layers}: each must be at least 1")
        if d_model % num_heads:
            raise MmsentiError(f"model.net.fusion.d_model={d_model} is not divisible by num_heads={num_heads}")
        self.modalities = list(input_dims)
        self.pooling = pooling
        self.proj = nn.ModuleDict({m: nn.Linear(d, d_model, bias=False) for m, d in input_dims.items()})
        self.text_dropout = nn.Dropout(embed_dropout)
        common = dict(num_heads=num_heads, dropout=dropout, attn_dropout=attn_dropout, embed_dropout=embed_dropout,
                      embed_scale=embed_scale, final_norm=final_norm)
        self.cross = nn.ModuleDict({
            f"{s}_to_{t}": PaperEncoder(d_model, num_layers=num_layers, cross=True, **common)
            for t in self.modalities for s in self.modalities if s != t})
        width = d_model * max(1, len(self.modalities) - 1)
        self.self_attn = nn.ModuleDict({t: PaperEncoder(width, num_layers=self_layers, cross=False, **common)
                                        for t in self.modalities})
        self.out_dim = width * len(self.modalities)
        self.output_block = (nn.Sequential(nn.Linear(self.out_dim, self.out_dim), nn.ReLU(), nn.Dropout(out_dropout),
                                           nn.Linear(self.out_dim, self.out_dim)) if output_block else None)

    def forward(self, states: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        masks = {m: masks[m].bool() for m in self.modalities}
        # masked frames are zeroed first: whatever they hold never reaches an attention product
        h = {m: states[m].masked_fill(~masks[m].unsqueeze(-1), 0.0) for m in self.modalities}
        h["text"] = self.text_dropout(h["text"])
        h = {m: self.proj[m](x) for m, x in h.items()}
        padding = {m: safe_key_padding(masks[m]) for m in self.modalities}
        present = {m: masks[m].any(dim=1).to(h[m].dtype).view(-1, 1, 1) for m in self.modalities}
        pooled = []
        for t in self.modalities:
            sources = [s for s in self.modalities if s != t]
            streams = [self.cross[f"{s}_to_{t}"](h[t], padding[s], h[s], present[s]) for s in sources] or [h[t]]
            x = self.self_attn[t](torch.cat(streams, dim=-1), padding[t])
            pooled.append(last_valid_step(x, masks[t]) if self.pooling == "last" else masked_mean(x, masks[t]))
        out = torch.cat(pooled, dim=-1)
        return out + self.output_block(out) if self.output_block is not None else out
