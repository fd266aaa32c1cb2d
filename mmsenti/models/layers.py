"""Layers shared by the model package and the code that rewrites models (compression)."""

from __future__ import annotations

import torch
from torch import nn


class LowRankLinear(nn.Module):
    """An ``nn.Linear(in, out)`` as two thin layers ``in -> rank -> out`` (``second(first(x))``).

    Built by :mod:`mmsenti.compression.lowrank` from a truncated SVD of the dense weight; it lives in
    the models package (below the compression code) so that :mod:`mmsenti.models.checkpoint`
    rebuilds it without importing compression or training code. ``weight``/``bias``/``in_features``/``out_features`` read like the
    dense layer's (``weight`` is the product ``second.weight @ first.weight``, computed on access,
    read-only) for code that inspects a Linear; ``forward`` never forms it.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.first = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.second = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    @property
    def in_features(self) -> int:
        return self.first.in_features

    @property
    def out_features(self) -> int:
        return self.second.out_features

    @property
    def rank(self) -> int:
        return self.first.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.second.weight @ self.first.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.second.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"
