"""Attention layers for the frame encoders and MulT fusion, written for export.

:class:`MultiheadAttention` and :class:`TransformerEncoder` compute exactly what
``nn.MultiheadAttention`` / ``nn.TransformerEncoder(nn.TransformerEncoderLayer(norm_first=True))``
compute, with the same parameter names (checkpoints load either way) and the same initialisation
order (a seed gives the same initial weights). What differs is the graph they export to: one
``F.scaled_dot_product_attention`` call with a full ``[B, 1, Tq, S]`` boolean mask. At opset 23
the dynamo exporter turns that call into a single ONNX ``Attention`` node, which ONNX Runtime runs
as one kernel; PyTorch's own module exports a ``[B, 1, 1, S]`` mask that ORT's ``Attention``
kernel rejects, and at lower opsets ~30 Reshape/Transpose/Slice nodes per layer. At d_model 64
those small nodes, not the matrix products, set the batch-1 latency of the fused engine.
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch import nn


class MultiheadAttention(nn.Module):
    """Batch-first multi-head attention; ``key_padding_mask`` is True where a key is padding."""

    # ONNX export writes the opset-23 ``Attention`` op (see :func:`onnx_attention_op`)
    onnx_attention_op: bool = True

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.head_dim, self.dropout = embed_dim, num_heads, embed_dim // num_heads, dropout
        # creation and initialisation in nn.MultiheadAttention's order (same RNG draws)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.constant_(self.in_proj_bias, 0.0)
        nn.init.constant_(self.out_proj.bias, 0.0)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.reshape(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        d = self.embed_dim
        if query is key_value:  # self-attention: one projection for q, k and v
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:  # the weight slices are constants: ORT folds them at load time and before quantisation
            q = F.linear(query, self.in_proj_weight[:d], self.in_proj_bias[:d])
            k, v = F.linear(key_value, self.in_proj_weight[d:], self.in_proj_bias[d:]).chunk(2, dim=-1)
        mask = None
        if key_padding_mask is not None:
            b, tq, s = query.shape[0], query.shape[1], key_value.shape[1]
            mask = (~key_padding_mask)[:, None, None, :].expand(b, 1, tq, s)
        if self.onnx_attention_op and torch.onnx.is_in_onnx_export():  # one ONNX Attention node on [B, T, d] inputs: no head reshapes
            return self.out_proj(torch.onnx.ops.attention(q, k, v, mask, q_num_heads=self.num_heads, kv_num_heads=self.num_heads)[0])
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        b, _, tq, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, tq, d))


@contextlib.contextmanager
def onnx_attention_op(model: nn.Module, enabled: bool):
    """Within the block, export ``model``'s attention as ONNX ``Attention`` (opset >= 23) or as SDPA's decomposition."""
    layers = [m for m in model.modules() if isinstance(m, MultiheadAttention)]
    before = [m.onnx_attention_op for m in layers]
    for m in layers:
        m.onnx_attention_op = enabled
    try:
        yield
    finally:
        for m, value in zip(layers, before):
            m.onnx_attention_op = value


class TransformerEncoderLayer(nn.Module):
    """Pre-norm encoder layer (``norm_first=True``, ReLU feed-forward), ``nn.TransformerEncoderLayer``'s names.

    ``norm_first=False``: the post-norm layer (``nn.TransformerEncoderLayer``'s default, what MISA's code uses),
    the same parameters."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float = 0.1, norm_first: bool = True):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiheadAttention(d_model, num_heads, dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, src_key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.norm_first:
            x = self.norm1(x + self.dropout1(self.self_attn(x, x, src_key_padding_mask)))
            return self.norm2(x + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x))))))
        h = self.norm1(x)
        x = x + self.dropout1(self.self_attn(h, h, src_key_padding_mask))
        return x + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(self.norm2(x))))))


class TransformerEncoder(nn.Module):
    """``num_layers`` copies of ``layer`` (copies, as ``nn.TransformerEncoder`` makes them)."""

    def __init__(self, layer: TransformerEncoderLayer, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])

    def forward(self, x: torch.Tensor, src_key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, src_key_padding_mask)
        return x
