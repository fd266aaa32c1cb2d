"""Per-layer token states and attention maps of a transformer text encoder, recorded with hooks.

Hidden-state / attention-map distillation (``distill.hidden_weight``, ``distill.attention_weight``)
compares these between student and teacher; the hooks leave the model's own forward untouched.
Knows nothing of Lightning.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from mmsenti.errors import MmsentiError
from mmsenti.models.adapters import adapter_for

__all__ = ["LayerRecorder", "use_eager_attention"]


class LayerRecorder:
    """Records each transformer layer's output states and attention maps with forward hooks.

    Hooks leave the model's own forward untouched, so the student is trained through exactly the
    code that serves it. Attention maps need eager attention (set by the caller).
    """

    def __init__(self, backbone: nn.Module, hidden: bool, attention: bool):
        try:  # the architecture adapter names the layers and their self-attention (mmsenti.models.adapters)
            self.adapter = adapter_for(backbone, "hidden-state/attention distillation")
            self.layers = list(self.adapter.layers(backbone))
        except MmsentiError as err:
            raise MmsentiError(f"hidden-state/attention distillation needs a transformer student with an architecture "
                               f"adapter, not {type(backbone).__name__} ({err})") from None
        self.want_hidden, self.want_attention = hidden, attention
        self.hidden: list[torch.Tensor] = []
        self.attention: list[torch.Tensor] = []

    @contextmanager
    def record(self) -> Iterator["LayerRecorder"]:
        self.hidden, self.attention, handles = [], [], []
        try:
            for layer in self.layers:
                if self.want_hidden:
                    handles.append(layer.register_forward_hook(
                        lambda m, args, out: self.hidden.append(out[0] if isinstance(out, tuple) else out)))
                if self.want_attention:
                    attn = self.adapter.self_attention(layer)
                    # MPNet returns its attention probabilities only when asked
                    handles.append(attn.register_forward_pre_hook(
                        lambda m, args, kwargs: (args, {**kwargs, "output_attentions": True}), with_kwargs=True))
                    handles.append(attn.register_forward_hook(lambda m, args, out: self.attention.append(out[1])))
            yield self
        finally:
            for h in handles:
                h.remove()
        if self.want_attention and any(a is None for a in self.attention):
            raise MmsentiError("attention maps were not returned; the encoder must use eager attention")


def use_eager_attention(backbone: nn.Module) -> None:
    if hasattr(backbone, "set_attn_implementation"):
        backbone.set_attn_implementation("eager")
