"""Per-architecture adapters: where a Hugging Face encoder keeps its layers, FFNs and attention heads.

Structured pruning, layer selection (``top_k`` fine-tuning, ``keep_layers`` students), checkpoint
shape fix-ups and attention-map distillation all need to reach inside an HF encoder. Instead of
probing attributes or class names, each architecture (``config.model_type``) names its parts once
here, registered as ``text_architecture`` in the one registry. An encoder without an adapter is
refused with one line (never skipped silently)::

    adapter = adapter_for(backbone)          # BERT (MiniLM), MPNet, DistilBERT
    adapter.layers(backbone)                 # the nn.ModuleList of transformer layers
    adapter.ffn(layer)                       # (up, down) attribute paths of the FFN
    adapter.self_attention(layer)            # the module holding q/k/v (attention maps come out of it)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from mmsenti.errors import MmsentiError
from mmsenti.registry import available, lookup, register


def get_path(obj: Any, path: str) -> Any:
    """``get_path(layer, "attention.self.query")`` (digits index into sequences)."""
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def set_path(obj: Any, path: str, value: nn.Module) -> None:
    *head, last = path.split(".")
    parent = get_path(obj, ".".join(head)) if head else obj
    if last.isdigit():
        parent[int(last)] = value
    else:
        setattr(parent, last, value)


@dataclass(frozen=True)
class EncoderAdapter:
    """Attribute paths of one HF encoder architecture (relative to the backbone / to one layer)."""

    name: str
    layers_path: str  # backbone -> nn.ModuleList of layers
    ffn_up: str  # layer -> up-projection nn.Linear
    ffn_down: str  # layer -> down-projection nn.Linear
    attention_path: str  # layer -> the self-attention module (q/k/v live in it)
    query: str  # attention module -> projections
    key: str
    value: str
    out: str  # layer -> attention output projection
    heads_attr: str  # attention module attribute holding the head count
    all_head_attr: str | None = None  # attention module attribute holding heads * head size, if any
    head_pruning: str | None = None  # why heads cannot be removed physically (None: they can)

    def layers(self, backbone: nn.Module) -> nn.ModuleList:
        try:
            layers = get_path(backbone, self.layers_path)
        except (AttributeError, IndexError):
            raise MmsentiError(f"{type(backbone).__name__}: no {self.layers_path} (the {self.name} adapter's layer stack)") from None
        if not isinstance(layers, nn.ModuleList):
            raise MmsentiError(f"{type(backbone).__name__}.{self.layers_path} is not a layer list")
        return layers

    def ffn(self, layer: nn.Module) -> tuple[str, str]:
        return self.ffn_up, self.ffn_down

    def self_attention(self, layer: nn.Module) -> nn.Module:
        return get_path(layer, self.attention_path)

    def head_size(self, layer: nn.Module) -> int:
        return int(self.self_attention(layer).attention_head_size)

    def projections(self, layer: nn.Module) -> dict[str, str]:
        """Layer-relative paths of the query/key/value and output projections."""
        a = self.attention_path
        return {"query": f"{a}.{self.query}", "key": f"{a}.{self.key}", "value": f"{a}.{self.value}", "out": self.out}

    def set_head_count(self, layer: nn.Module) -> int:
        """After a resize of the value projection, make the attention module's counters agree."""
        att = self.self_attention(layer)
        size = int(att.attention_head_size)
        n = get_path(layer, self.projections(layer)["value"]).out_features // size
        setattr(att, self.heads_attr, n)
        if self.all_head_attr:
            setattr(att, self.all_head_attr, n * size)
        return n


def _register(adapter: EncoderAdapter, *model_types: str) -> EncoderAdapter:
    heads = "heads prunable" if adapter.head_pruning is None else "FFN-only pruning"
    for model_type in model_types:
        register("text_architecture", model_type,
                 f"{adapter.layers_path}[i]: FFN {adapter.ffn_up} -> {adapter.ffn_down}, attention "
                 f"{adapter.attention_path}.{{{adapter.query},{adapter.key},{adapter.value}}} ({heads})")(adapter)
    return adapter


BERT = _register(EncoderAdapter(
    "bert", "encoder.layer", "intermediate.dense", "output.dense", "attention.self", "query", "key", "value",
    "attention.output.dense", "num_attention_heads", "all_head_size"), "bert")
MPNET = _register(EncoderAdapter(
    "mpnet", "encoder.layer", "intermediate.dense", "output.dense", "attention.attn", "q", "k", "v",
    "attention.attn.o", "num_attention_heads", "all_head_size",
    head_pruning="MPNet adds one relative-position bias per head, computed once and shared by every layer, so a "
                 "layer cannot drop heads on its own; prune its FFN neurons (compression.ffn_amount) instead"), "mpnet")
DISTILBERT = _register(EncoderAdapter(
    "distilbert", "transformer.layer", "ffn.lin1", "ffn.lin2", "attention", "q_lin", "k_lin", "v_lin",
    "attention.out_lin", "n_heads", None), "distilbert")


def adapter_for(backbone: nn.Module, purpose: str = "this operation") -> EncoderAdapter:
    """The adapter of ``backbone`` (by ``config.model_type``), or one line naming what is supported."""
    model_type = str(getattr(getattr(backbone, "config", None), "model_type", type(backbone).__name__))
    adapter = lookup("text_architecture", model_type)
    if adapter is None:
        raise MmsentiError(f"{purpose} needs a transformer text encoder with an architecture adapter; "
                           f"{type(backbone).__name__} (model_type {model_type!r}) has none "
                           f"(supported: {', '.join(available('text_architecture'))}; add one in mmsenti/models/adapters.py)")
    return adapter


def encoder_layers(backbone: nn.Module, purpose: str = "this operation") -> nn.ModuleList:
    return adapter_for(backbone, purpose).layers(backbone)
