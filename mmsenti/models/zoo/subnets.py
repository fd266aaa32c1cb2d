"""Shared by the zoo's tensor-fusion models: unimodal vectors ``h_m`` from the encoders' sequences."""

from __future__ import annotations

import torch
from torch import nn

from mmsenti.errors import MmsentiError

ORDER = ("text", "audio", "vision")  # the fixed order of the modalities in every fusion product


def masked_pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``h [B, T, d]`` over the valid steps of ``mask [B, T]``; an all-false row gives zeros.

    Masked frames are replaced (``masked_fill``), not multiplied by 0, so whatever they hold — even
    ``inf`` or ``nan`` — never reaches the result."""
    valid = mask.unsqueeze(-1)
    total = h.masked_fill(~valid, 0.0).sum(1)
    return total / valid.to(h.dtype).sum(1).clamp(min=1.0)


def with_one(h: torch.Tensor) -> torch.Tensor:
    """``[h; 1]``: the constant 1 appended as the last entry (``[B, d]`` → ``[B, d + 1]``)."""
    return torch.cat([h, torch.ones_like(h[:, :1])], dim=-1)


class UnimodalSubnets(nn.Module):
    """One small MLP per modality over the masked mean of its encoder states: ``h_m [B, d_m]``.

    ``num_layers`` Linear→ReLU→Dropout layers (the first maps the encoder width to ``d_m``, the others
    keep ``d_m``). A missing modality (an all-false mask row) gives ``h_m = 0`` exactly: the MLP's biases
    would otherwise make a constant vector out of nothing."""

    def __init__(self, input_dims: dict[str, int], hidden: dict[str, int], num_layers: int, dropout: float):
        super().__init__()
        if num_layers < 1:
            raise MmsentiError(f"model.net.fusion.num_layers={num_layers}: the unimodal subnetworks need at least 1 layer")
        unknown = [m for m in input_dims if m not in ORDER]
        if unknown:
            raise MmsentiError(f"fusion input modalities {unknown}: only {list(ORDER)} are known")
        self.modalities = [m for m in ORDER if m in input_dims]
        for m in self.modalities:
            if int(hidden[m]) < 1:
                raise MmsentiError(f"model.net.fusion.{m}_hidden={hidden[m]}: must be a positive width")
        self.dims = {m: int(hidden[m]) for m in self.modalities}
        self.nets = nn.ModuleDict()
        for m in self.modalities:
            layers: list[nn.Module] = []
            width = input_dims[m]
            for _ in range(num_layers):
                layers += [nn.Linear(width, self.dims[m]), nn.ReLU(), nn.Dropout(dropout)]
                width = self.dims[m]
            self.nets[m] = nn.Sequential(*layers)

    def forward(self, states: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for m in self.modalities:
            mask = masks[m].bool()
            present = mask.any(dim=1, keepdim=True).to(states[m].dtype)  # [B, 1]: 0 for a missing modality
            out[m] = self.nets[m](masked_pool(states[m], mask)) * present
        return out
