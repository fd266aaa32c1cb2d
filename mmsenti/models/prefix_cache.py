"""The frozen-prefix cache: the token states a frozen bottom of the text encoder gives, kept per utterance.

With ``finetune: top_k`` (MiniLM-L6 fine-tunes its top 2 of 6 layers) the embeddings and the bottom
layers never change during training; run in eval mode they are a deterministic function of the
utterance's token ids, yet a plain training loop recomputes them over the same sentences every epoch.
:class:`PrefixCache` keeps their output once per utterance, so later epochs run only the layers above
(:class:`~mmsenti.models.encoders.TextEncoder` does the splitting; ``finetune: frozen`` caches the whole
encoder output). The idea is the one of feature caching for a frozen extractor, and its exactness
rests on two facts: the cached part runs in eval mode (no dropout), and in a padded batch a valid
token's states do not depend on the padding (padded keys are masked out of every attention). In
floating point the second holds up to the kernels' shape-dependent rounding: an utterance batched
with other padding than when it was kept differs by what the uncached encoder itself differs by
between two batchings of it (a few 1e-6 on MiniLM states of magnitude ~6); in the same batching the
cached and uncached outputs are equal.

Keys, so nothing stale is ever read:

* **model key** — :func:`model_key`: a SHA-256 of the frozen part's weights and buffers
  (:func:`tensors_digest`), the number of frozen layers, the architecture config, dtype, device
  type and library versions. A retrained or different backbone, another ``top_k`` or
  ``keep_layers`` is another key (another folder on disk); the encoder recomputes the weights digest
  whenever a frozen tensor is replaced or modified in place (its identity / version counter), so
  ``load_state_dict``, pruning or a copied teacher invalidate the entries by themselves (an edit through
  ``tensor.data`` bypasses the version counter: edit frozen weights under ``torch.no_grad()`` instead);
* **utterance key** — :func:`row_keys`: a BLAKE2b of the utterance's token ids (its valid, unpadded
  part). The ids are what the tokenizer made of the text, so a changed text (or tokenizer output)
  is a new key, and two texts the model cannot tell apart share one.

Storage: an in-memory dict (CPU tensors ``[n_tokens, hidden]``, each of its true length: a batch
re-pads them with zeros up to its own length; padded positions are masked everywhere downstream).
It is bounded (``max_bytes``): once full, new utterances are computed as usual but not kept, so a
set larger than the bound still hits on the part that fits instead of thrashing. Optionally on disk,
``<cache_dir>/<model key>/shard-<digest>.pt``, written atomically (:func:`mmsenti.io.torch_save_atomic`)
and read with ``torch.load(weights_only=True)``, like the teacher soft-target cache
(:mod:`mmsenti.distill.cache`): shards are immutable (a concurrent run writes its own), an
unreadable or foreign one is skipped with a warning and recomputed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from mmsenti.io import json_digest, torch_save_atomic

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
DEFAULT_MAX_MB = 1024.0
_ROW_PERSON = b"mmsenti-prefix1"  # blake2b personalisation: utterance keys of this scheme only


def tensors_digest(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 over each tensor's name, dtype, shape and bytes, in the given order."""
    h = hashlib.sha256()
    for name, t in named:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_key(weights_digest: str, frozen_layers: int, whole: bool, config: dict[str, Any], dtype: torch.dtype,
              device_type: str) -> str:
    """The key of one frozen part (see the module docstring)."""
    import transformers

    payload = {"format": CACHE_FORMAT, "weights": weights_digest, "frozen_layers": int(frozen_layers), "whole": bool(whole),
               "config": config, "dtype": str(dtype), "device": device_type, "torch": torch.__version__,
               "transformers": transformers.__version__}
    return json_digest(payload, 32)


def row_keys(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[list[str], list[int]] | None:
    """One key and valid length per row; ``None`` unless every row is right-padded (mask = ones, then zeros)."""
    mask = attention_mask.detach().to("cpu").bool()
    lengths = mask.sum(1)
    steps = torch.arange(mask.shape[1]).unsqueeze(0)
    if not torch.equal(mask, steps < lengths.unsqueeze(1)):
        return None
    ids = input_ids.detach().to("cpu", torch.int64)
    keys, ns = [], []
    for row, n in zip(ids, lengths.tolist()):
        keys.append(hashlib.blake2b(row[:n].numpy().tobytes(), digest_size=16, person=_ROW_PERSON).hexdigest())
        ns.append(int(n))
    return keys, ns


class PrefixCache:
    """Per-utterance states of one frozen part (the current model key), in memory and optionally on disk.

    ``enabled=False`` turns lookups off at run time (the encoder then runs its whole backbone, still
    with the frozen part in eval mode: what ``benchmarks/bench_prefix_cache.py`` times as uncached).
    ``active`` is set by the encoder's first training-mode pass: before it, eval passes neither read nor
    keep anything (a model that is only evaluated reads each utterance once; keeping it would only cost
    memory), after it the training run's validation is served too.
    ``hits`` / ``misses`` count utterances, ``bypassed`` forward passes that could not use the cache.
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, max_mb: float = DEFAULT_MAX_MB):
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.max_bytes = int(float(max_mb) * 2**20)
        self.enabled = True
        self.active = False
        self.key: str | None = None
        self._states: dict[str, torch.Tensor] = {}
        self._unsaved: list[str] = []
        self.bytes = 0
        self.hits = self.misses = self.bypassed = self.loaded = 0
        self._full_warned = False

    # ------------------------------------------------------------------ keys and disk
    def use(self, key: str) -> None:
        """Switch to the frozen part named ``key``: a new key drops the old entries (they are of another model)."""
        if key == self.key:
            return
        self.flush()
        self.key, self._states, self._unsaved, self.bytes = key, {}, [], 0
        self._load_shards()

    @property
    def folder(self) -> Path | None:
        return self.cache_dir / self.key if self.cache_dir is not None and self.key else None

    def _load_shards(self) -> None:
        folder = self.folder
        if folder is None or not folder.is_dir():
            return
        for path in sorted(folder.glob("shard-*.pt")):
            try:
                stored = torch.load(path, map_location="cpu", weights_only=True)
                if stored.get("format") != CACHE_FORMAT or stored.get("model_key") != self.key:
                    log.warning("prefix cache: %s belongs to another model or format; ignored", path)
                    continue
                pieces = stored["states"].split([int(n) for n in stored["lengths"].tolist()])
                for row_key, states in zip(stored["keys"], pieces, strict=True):
                    if row_key not in self._states and self._room_for(states):
                        self._keep(row_key, states)
                        self.loaded += 1
            except Exception as err:  # truncated or foreign file: recompute rather than fail
                log.warning("prefix cache: unreadable shard %s (%s); ignored", path, type(err).__name__)
        if self.loaded:
            log.info("prefix cache: %d utterances loaded from %s", self.loaded, folder)

    def flush(self) -> Path | None:
        """Write the entries added since the last flush as one shard (no-op without a cache folder)."""
        folder, keys = self.folder, self._unsaved
        self._unsaved = []
        if folder is None or not keys:
            return None
        states = [self._states[k] for k in keys]
        shard = folder / f"shard-{json_digest(keys, 16)}.pt"
        try:
            torch_save_atomic(shard, {"format": CACHE_FORMAT, "model_key": self.key, "keys": keys,
                                      "lengths": torch.tensor([len(s) for s in states], dtype=torch.long),
                                      "states": torch.cat(states)})
        except OSError as err:
            log.warning("prefix cache: cannot write %s (%s); keeping it in memory only", shard, err)
            self.cache_dir = None
            return None
        log.info("prefix cache: wrote %s (%d utterances)", shard, len(keys))
        return shard

    # ------------------------------------------------------------------ entries
    def get(self, keys: Sequence[str]) -> list[torch.Tensor | None]:
        found = [self._states.get(k) for k in keys]
        hits = sum(s is not None for s in found)
        self.hits += hits
        self.misses += len(found) - hits
        return found

    def put(self, key: str, states: torch.Tensor) -> bool:
        """Keep ``states`` ``[n, hidden]`` (a private CPU copy); False when the memory bound is reached."""
        if key in self._states:
            return True
        with torch.inference_mode(False):  # states made under inference mode must stay usable in training
            states = states.detach().to("cpu", copy=True)
        if not self._room_for(states):
            if not self._full_warned:
                log.warning("prefix cache: memory bound of %.0f MB reached; further utterances are computed, not kept "
                            "(raise model.net.text_encoder.prefix_cache_max_mb)", self.max_bytes / 2**20)
                self._full_warned = True
            return False
        self._keep(key, states)
        self._unsaved.append(key)
        return True

    def _room_for(self, states: torch.Tensor) -> bool:
        return self.bytes + states.numel() * states.element_size() <= self.max_bytes

    def _keep(self, key: str, states: torch.Tensor) -> None:
        self._states[key] = states
        self.bytes += states.numel() * states.element_size()

    def __len__(self) -> int:
        return len(self._states)

    def stats(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "active": self.active, "entries": len(self), "megabytes": round(self.bytes / 2**20, 2), "hits": self.hits,
                "misses": self.misses, "bypassed": self.bypassed, "loaded_from_disk": self.loaded,
                "cache_dir": str(self.cache_dir) if self.cache_dir else None, "model_key": self.key}
