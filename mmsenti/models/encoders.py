"""Encoders for each modality.

* ``TextEncoder`` wraps any Hugging Face encoder (default: the distilled MiniLM-L6 that ships in a
  package) and can freeze it, fine-tune it fully, or fine-tune only its top k layers.
  ``keep_layers`` keeps only some of its transformer layers (a DistilBERT-style shallower student:
  ``[0, 2, 4]`` of MiniLM-L6 is MiniLM-L3); ``architecture`` other than ``hf`` builds a registered
  ``text_backbone`` instead (:mod:`mmsenti.models.students`, e.g. ``bilstm`` over the word embeddings).
* Sequence encoders turn frame features ``[B, T, D]`` (audio prosody, facial expression) with a
  boolean mask into ``[B, T, d_model]``. They are registered by name (``conv_transformer``,
  ``lstm``) so a config picks one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mmsenti.errors import MmsentiError
from mmsenti.models.attention import TransformerEncoder, TransformerEncoderLayer
from mmsenti.pretrained import load_pretrained
from mmsenti.registry import build, register


class TextEncoder(nn.Module):
    """A pretrained transformer encoder over token ids; returns token states ``[B, L, H]``."""

    def __init__(self, pretrained: str = "minilm_l6", finetune: str = "top_k", top_k: int = 2,
                 keep_layers: list[int] | None = None, architecture: str = "hf", backbone_options: dict | None = None,
                 pretrained_weights: bool = True):
        """``pretrained_weights=False`` builds the backbone from its config alone (random weights; for a
        checkpoint that holds every tensor, :mod:`mmsenti.models.checkpoint`)."""
        super().__init__()
        if architecture == "hf":
            self.backbone = load_pretrained(pretrained, "model" if pretrained_weights else "architecture")
        else:
            from mmsenti.models import students  # noqa: F401  (registers the student text backbones)

            self.backbone = build("text_backbone", architecture, pretrained=pretrained,
                                  pretrained_weights=pretrained_weights, **(backbone_options or {}))
        if keep_layers is not None:
            keep_encoder_layers(self.backbone, keep_layers)
        self.hidden_size = int(self.backbone.config.hidden_size)
        self.frozen = finetune == "frozen"
        self._set_trainable(finetune, top_k)
        self.train()  # from_pretrained leaves the backbone in eval mode

    def train(self, mode: bool = True) -> "TextEncoder":
        super().train(mode)
        if self.frozen:  # a frozen encoder is a fixed feature extractor: no dropout noise
            self.backbone.eval()
        return self

    def _set_trainable(self, finetune: str, top_k: int) -> None:
        if finetune not in {"frozen", "full", "top_k"}:
            raise MmsentiError(f"model.net.text_encoder.finetune={finetune!r}; choose frozen, full or top_k")
        trainable = finetune == "full"
        for p in self.backbone.parameters():
            p.requires_grad = trainable
        if finetune == "top_k" and top_k > 0:
            if not hasattr(self.backbone, "get_input_embeddings"):  # not a transformer: no layers to pick
                raise MmsentiError(f"finetune=top_k needs a transformer backbone; use full or frozen for {type(self.backbone).__name__}")
            layers = _encoder_layers(self.backbone)
            for layer in layers[-top_k:]:
                for p in layer.parameters():
                    p.requires_grad = True

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _encoder_layers(backbone: nn.Module, purpose: str = "top_k fine-tuning") -> nn.ModuleList:
    """The stack of transformer layers of an HF encoder (through its architecture adapter)."""
    from mmsenti.models.adapters import encoder_layers

    return encoder_layers(backbone, purpose)


def keep_encoder_layers(backbone: nn.Module, keep: list[int]) -> None:
    """Keep only the transformer layers at indices ``keep`` (in that order), in place.

    DistilBERT initialises its student from every other layer of the teacher; with
    ``keep=[0, 2, 4]`` a 6-layer MiniLM becomes a 3-layer one whose layer ``i`` *is* (holds the
    weights of) the original layer ``keep[i]``.
    """
    layers = _encoder_layers(backbone, "keep_layers")
    keep = [int(i) for i in keep]
    if not keep or any(not 0 <= i < len(layers) for i in keep) or len(set(keep)) != len(keep):
        raise MmsentiError(f"keep_layers={keep}: need distinct indices in [0, {len(layers) - 1}]")
    kept = [layers[i] for i in keep]
    for i in reversed(range(len(layers))):
        del layers[i]
    layers.extend(kept)
    for new_index, layer in enumerate(kept):  # attention modules that index caches by layer
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    backbone.config.num_hidden_layers = len(kept)


class SinusoidalPositions(nn.Module):
    """Fixed sinusoidal position encodings (as in MulT), added to ``[B, T, d]`` inputs."""

    def __init__(self, d_model: int, max_len: int = 4096):
        super().__init__()
        pos = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        table = torch.zeros(max_len, d_model)
        table[:, 0::2] = torch.sin(pos * div)
        table[:, 1::2] = torch.cos(pos * div)[:, : d_model // 2]
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table[: x.shape[1]].unsqueeze(0).to(x.dtype)


def safe_key_padding(mask: torch.Tensor) -> torch.Tensor:
    """``key_padding_mask`` for attention from a True=valid mask.

    Rows with no valid position would give NaN softmax; they attend to everything instead and
    the caller zeroes their output (a missing modality contributes nothing).
    """
    padding = ~mask
    empty = ~mask.any(dim=1, keepdim=True)
    return padding & ~empty


@register("sequence_encoder", "conv_transformer")
class ConvTransformerEncoder(nn.Module):
    """Temporal 1-D convolution projection, positions, then a small transformer encoder."""

    def __init__(self, input_dim: int, d_model: int = 64, num_layers: int = 1, num_heads: int = 4,
                 kernel_size: int = 3, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Conv1d(input_dim, d_model, kernel_size, padding=kernel_size // 2)
        self.positions = SinusoidalPositions(d_model)
        layer = TransformerEncoderLayer(d_model, num_heads, 4 * d_model, dropout)
        self.encoder = TransformerEncoder(layer, num_layers) if num_layers else None
        self.out_dim = d_model

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.proj(x.transpose(1, 2)).transpose(1, 2)
        h = self.positions(h)
        if self.encoder is not None:
            h = self.encoder(h, src_key_padding_mask=safe_key_padding(mask))
        return h * mask.unsqueeze(-1).to(h.dtype)


def _reverse_index(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """``[B, T]`` indices that reverse each row's first ``lengths[b]`` steps and leave the padding in place."""
    t = torch.arange(steps, device=lengths.device).unsqueeze(0)
    n = lengths.unsqueeze(1)
    return torch.where(t < n, n - 1 - t, t)


def _gather_steps(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def bidirectional_lstm(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """A bidirectional ``batch_first`` LSTM over right-padded sequences, without packing.

    The backward direction reads each sequence reversed *within its own length*, so padding never
    reaches a valid step: the outputs at valid steps equal ``pack_padded_sequence`` + ``nn.LSTM``
    (the module's own weights are used), and unlike packed sequences this traces under
    ``torch.export`` — LSTM encoders and the BiLSTM student export to ONNX. Padded steps hold
    arbitrary values; callers mask them.
    """
    batch, steps, _ = x.shape
    rev = _reverse_index(lengths.to(x.device).long(), steps)
    h = x
    for layer in range(lstm.num_layers):
        outs = []
        for suffix in ("", "_reverse"):
            weights = [getattr(lstm, f"{n}_l{layer}{suffix}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            inp = _gather_steps(h, rev) if suffix else h
            zeros = h.new_zeros(1, batch, lstm.hidden_size)
            out = torch._VF.lstm(inp, (zeros, zeros), weights, True, 1, 0.0, lstm.training, False, True)[0]
            outs.append(_gather_steps(out, rev) if suffix else out)
        h = torch.cat(outs, dim=-1)
        if lstm.dropout and layer < lstm.num_layers - 1:
            h = nn.functional.dropout(h, lstm.dropout, lstm.training)
    return h


@register("sequence_encoder", "lstm")
class LSTMEncoder(nn.Module):
    """Bidirectional LSTM over frames; padding never reaches a valid step (exports to ONNX)."""

    def __init__(self, input_dim: int, d_model: int = 64, num_layers: int = 1, dropout: float = 0.1, **_: object):
        super().__init__()
        if d_model % 2:
            raise MmsentiError(f"lstm encoder needs an even d_model (got {d_model})")
        self.lstm = nn.LSTM(input_dim, d_model // 2, num_layers, batch_first=True, bidirectional=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.out_dim = d_model

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = bidirectional_lstm(self.lstm, x, mask.sum(1).clamp(min=1))
        return h * mask.unsqueeze(-1).to(h.dtype)


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid time steps; an all-masked row gives zeros."""
    w = mask.unsqueeze(-1).to(h.dtype)
    return (h * w).sum(1) / w.sum(1).clamp(min=1.0)
