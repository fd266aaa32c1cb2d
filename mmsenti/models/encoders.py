"""Encoders for each modality.

* ``TextEncoder`` wraps any Hugging Face encoder (default: the distilled MiniLM-L6 that ships in a
  package) and can freeze it, fine-tune it fully, or fine-tune only its top k layers.
  ``keep_layers`` keeps only some of its transformer layers (a DistilBERT-style shallower student:
  ``[0, 2, 4]`` of MiniLM-L6 is MiniLM-L3); ``architecture`` other than ``hf`` builds a registered
  ``text_backbone`` instead (:mod:`mmsenti.models.students`, e.g. ``bilstm`` over the word embeddings).
  Its frozen part (``top_k``: embeddings + bottom layers; ``frozen``: all of it) can be computed once per
  utterance and kept (``prefix_cache``, :mod:`mmsenti.models.prefix_cache`).
* Sequence encoders turn frame features ``[B, T, D]`` (audio prosody, facial expression) with a
  boolean mask into ``[B, T, d_model]``. They are registered by name (``conv_transformer``,
  ``lstm``) so a config picks one.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn

from mmsenti.errors import MmsentiError
from mmsenti.models.adapters import adapter_for, encoder_layers, get_path, set_path
from mmsenti.models.attention import TransformerEncoder, TransformerEncoderLayer
from mmsenti.models.prefix_cache import DEFAULT_MAX_MB, PrefixCache, model_key, row_keys, tensors_digest
from mmsenti.pretrained import load_pretrained
from mmsenti.registry import build, register


class TextEncoder(nn.Module):
    """A pretrained transformer encoder over token ids; returns token states ``[B, L, H]``.

    ``prefix_cache=True`` (the configs' default, :mod:`mmsenti.models.prefix_cache`): with
    ``finetune=top_k`` the embeddings and the bottom ``L - top_k`` layers run in eval mode and their
    output is computed once per utterance and kept; later passes run only the top layers on the kept
    states (``finetune=frozen``: the whole output is kept). The result equals the uncached encoder with
    its frozen part in eval mode (a frozen layer is a fixed feature extractor, as ``frozen`` already
    was). Padded positions of the output then hold what the top layers make of zeros: every consumer
    masks them. ``prefix_cache=False`` is the plain forward of before, where the frozen bottom layers of
    ``top_k`` still drew dropout in training mode. The cache is never used while tracing, compiling or
    exporting (an exported graph computes the whole encoder), under autocast, or when a hook watches the
    backbone (distillation's layer recorder): those passes run the whole backbone. Nor before the model's
    first training-mode pass: a model that is only evaluated (a loaded checkpoint, a teacher scoring its
    data once) would keep states it never reads again.
    ``prefix_cache_dir`` also keeps the states on disk (``null``: memory only), ``prefix_cache_max_mb``
    bounds the memory.
    """

    def __init__(self, pretrained: str = "minilm_l6", finetune: str = "top_k", top_k: int = 2,
                 keep_layers: list[int] | None = None, architecture: str = "hf", backbone_options: dict | None = None,
                 pretrained_weights: bool = True, prefix_cache: bool = False, prefix_cache_dir: str | None = None,
                 prefix_cache_max_mb: float = DEFAULT_MAX_MB):
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
        # the frozen part the cache keeps: the embeddings + `frozen_layers` bottom layers, or the whole backbone
        self.frozen_layers, self.cache_whole = self._frozen_part(finetune, top_k)
        self.prefix_cache = PrefixCache(prefix_cache_dir, prefix_cache_max_mb) if prefix_cache and self.cache_whole is not None else None
        self._fingerprint: tuple | None = None
        self.train()  # from_pretrained leaves the backbone in eval mode

    def train(self, mode: bool = True) -> "TextEncoder":
        was_training = self.training
        super().train(mode)
        if self.frozen or (self.prefix_cache is not None and self.cache_whole):
            self.backbone.eval()  # a frozen encoder is a fixed feature extractor: no dropout noise
        elif self.prefix_cache is not None:  # the frozen bottom likewise; only the top layers train
            self.backbone.eval()
            for layer in self._layers()[self.frozen_layers:]:
                layer.train(mode)
        if self.prefix_cache is not None and was_training != mode:
            self.prefix_cache.flush()  # the epoch's new entries to disk (Lightning calls eval() before each validation)
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

    def _frozen_part(self, finetune: str, top_k: int) -> tuple[int, bool | None]:
        """``(frozen bottom layers, whole)``: ``whole`` when nothing trains, ``None`` when nothing is frozen."""
        if finetune == "frozen":
            return 0, True
        if finetune != "top_k":
            return 0, None
        if top_k <= 0:  # nothing trains
            return 0, True
        n_layers = len(self._layers())
        if top_k >= n_layers or not hasattr(self.backbone, "embeddings"):  # no layer frozen / no embeddings to stand in for
            return 0, None
        return n_layers - top_k, False

    def _layers(self) -> nn.ModuleList:
        return _encoder_layers(self.backbone)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        cache = self.prefix_cache
        # a traced / compiled / exported graph computes the whole encoder: the cache is eager-mode Python
        if cache is not None and cache.enabled and not _tracing():
            cache.active |= self.training  # it serves a model that trains (and its validation), see PrefixCache
            rows = self._cache_rows(input_ids, attention_mask) if cache.active else None
            if rows is not None:
                return self._cached_forward(input_ids, attention_mask, *rows)
            cache.bypassed += cache.active
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    # ------------------------------------------------------------------ the frozen-prefix cache
    def _cache_rows(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[list[str], list[int]] | None:
        """The rows' keys and lengths when this pass may use the cache, else None (run the whole backbone)."""
        if torch.is_autocast_enabled(input_ids.device.type):  # the kept states are of full precision
            return None
        frozen = self._frozen_modules()
        if any(m.training for m in frozen) or self._hooked():
            return None
        if any(p.requires_grad for m in frozen for p in m.parameters(recurse=False)):
            return None
        return row_keys(input_ids, attention_mask)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.cache_whole:
            return list(self.backbone.modules())
        top = {id(m) for layer in self._layers()[self.frozen_layers:] for m in layer.modules()}
        return [m for m in self.backbone.modules() if id(m) not in top]

    def _hooked(self) -> bool:
        from torch.nn.modules import module as torch_module

        if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
            return True
        return any(m._forward_hooks or m._forward_pre_hooks for m in self.backbone.modules())

    def _frozen_tensors(self) -> list[tuple[str, torch.Tensor]]:
        named = [*self.backbone.named_parameters(), *self.backbone.named_buffers()]
        if self.cache_whole:
            return named
        path = adapter_for(self.backbone).layers_path
        top = tuple(f"{path}.{i}." for i in range(self.frozen_layers, len(self._layers())))
        return [(n, t) for n, t in named if not n.startswith(top)]

    def prefix_key(self) -> str:
        """The cache's model key for the frozen part as it is now (its weights digest is redone only when
        a frozen tensor was replaced or changed in place)."""
        tensors = self._frozen_tensors()
        fingerprint = tuple((n, id(t), t._version, t.data_ptr(), t.dtype, tuple(t.shape), t.device.type) for n, t in tensors)
        if fingerprint != self._fingerprint:
            first = tensors[0][1]
            config = self.backbone.config.to_dict() if hasattr(self.backbone.config, "to_dict") else vars(self.backbone.config)
            config = {**config, "modules": [type(m).__qualname__ for m in self._frozen_modules()]}
            self._prefix_key = model_key(tensors_digest(tensors), self.frozen_layers, bool(self.cache_whole),
                                         config, first.dtype, first.device.type)
            self._fingerprint = fingerprint
        return self._prefix_key

    def _cached_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, keys: list[str],
                        lengths: list[int]) -> torch.Tensor:
        cache = self.prefix_cache
        cache.use(self.prefix_key())
        states = cache.get(keys)
        missing = [i for i, s in enumerate(states) if s is None]
        if missing:
            index = torch.tensor(missing, device=input_ids.device)
            width = max(1, max(lengths[i] for i in missing))
            with torch.no_grad():
                computed = self._run_frozen(input_ids[index, :width], attention_mask[index, :width])
            for j, i in enumerate(missing):
                states[i] = computed[j, : lengths[i]]
                cache.put(keys[i], states[i])
        hidden = nn.utils.rnn.pad_sequence([s.to(input_ids.device) for s in states], batch_first=True)
        if hidden.shape[1] < input_ids.shape[1]:  # the batch is padded beyond its longest row
            hidden = nn.functional.pad(hidden, (0, 0, 0, input_ids.shape[1] - hidden.shape[1]))
        if self.cache_whole:
            return hidden
        return self._run_top(hidden, input_ids, attention_mask)

    def _run_frozen(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The frozen part's output (HF's own forward with only the bottom layers in its layer list)."""
        if self.cache_whole:
            return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        with self._only_layers(slice(0, self.frozen_layers)):
            return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def _run_top(self, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The top layers over given input states: HF's own forward, with the embeddings' output replaced by
        ``hidden`` and only the top layers in its layer list, so the attention mask (and MPNet's relative
        position bias) are built exactly as in the uncached pass."""
        handle = self.backbone.embeddings.register_forward_hook(lambda module, args, output: hidden)
        try:
            with self._only_layers(slice(self.frozen_layers, None)):
                return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        finally:
            handle.remove()

    @contextlib.contextmanager
    def _only_layers(self, part: slice) -> Iterator[None]:
        path = adapter_for(self.backbone).layers_path
        layers = get_path(self.backbone, path)
        set_path(self.backbone, path, nn.ModuleList(list(layers)[part]))
        try:
            yield
        finally:
            set_path(self.backbone, path, layers)


def _tracing() -> bool:
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _encoder_layers(backbone: nn.Module, purpose: str = "top_k fine-tuning") -> nn.ModuleList:
    """The stack of transformer layers of an HF encoder (through its architecture adapter)."""
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
