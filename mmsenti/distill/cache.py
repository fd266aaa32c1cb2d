"""Teacher soft targets, computed once per (teacher, data, settings) and cached on disk.

A frozen teacher gives the same outputs every epoch, so running it every step wastes most of a
distillation run (a 12-layer teacher costs several times the student). The first run writes
``<cache_dir>/<key>.pt``; later runs with the same key load it in milliseconds. The key is a
hash of

* the teacher checkpoint's bytes (a retrained or different teacher gets a new key),
* the training samples (ids, text, labels and audio/vision frames),
* the settings that change the teacher's inputs (its tokenizer, ``max_text_len``, ...).

so a change to any of them is a miss and recomputes; nothing stale is ever read. The file holds
tensors, a list of ids and a dict of strings only, and is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmsenti.errors import MmsentiError
from mmsenti.io import json_digest, torch_save_atomic

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


def samples_fingerprint(samples: Sequence[dict]) -> str:
    """SHA-256 over every sample's id, text, label and audio/vision frames, in order."""
    h = hashlib.sha256()
    for s in samples:
        h.update(json.dumps([str(s.get("id")), s.get("text") or "", float(s["label"])]).encode())
        for key in ("audio", "vision"):
            frames = s.get(key)
            if frames is None:
                h.update(b"-")
            else:
                arr = np.ascontiguousarray(frames, dtype=np.float32)
                h.update(str(arr.shape).encode())
                h.update(arr.tobytes())
    return h.hexdigest()


def soft_target_key(teacher_digest: str, data_digest: str, settings: dict[str, Any]) -> str:
    payload = {"format": CACHE_FORMAT, "teacher": teacher_digest, "data": data_digest, "settings": settings}
    return json_digest(payload, 24)


@dataclass
class SoftTargets:
    """Teacher outputs for every training sample, looked up by sample id."""

    ids: list[str]
    score: torch.Tensor  # [N] teacher sentiment score (the logit of "positive" for classification)
    logits_7: torch.Tensor | None  # [N, 7] or None when the teacher has no 7-class head
    key: str = ""
    # with modalities averaged out (``distill.marginalize``): ``score`` is the marginal score and this
    # the teacher's ordinary (joint) score; their difference is what it credits to those modalities
    score_joint: torch.Tensor | None = None
    from_cache: bool = False
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {sid: i for i, sid in enumerate(self.ids)}
        if len(self._index) != len(self.ids):
            raise MmsentiError("soft targets: sample ids are not unique; distillation needs one id per sample")

    def lookup(self, ids: Sequence[str], device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows = self._rows(ids)
        score = self.score[rows].to(device)
        logits_7 = self.logits_7[rows].to(device) if self.logits_7 is not None else None
        return score, logits_7

    def lookup_joint(self, ids: Sequence[str], device: torch.device | str | None = None) -> torch.Tensor | None:
        """The joint scores of ``ids`` (None when the targets were not marginalised)."""
        if self.score_joint is None:
            return None
        return self.score_joint[self._rows(ids)].to(device)

    def _rows(self, ids: Sequence[str]) -> torch.Tensor:
        try:
            return torch.tensor([self._index[str(i)] for i in ids], dtype=torch.long)
        except KeyError as err:
            raise MmsentiError(f"no cached teacher output for sample {err.args[0]!r}: the cache does not cover this data") from None


def load_or_compute(cache_dir: str | os.PathLike | None, key: str, ids: Sequence[str],
                    compute: Callable[[], tuple[torch.Tensor, ...]]) -> SoftTargets:
    """Load ``<cache_dir>/<key>.pt`` when present (a hit), else run ``compute`` and write it (a miss).

    ``compute`` returns ``(score, logits_7)`` or ``(score, logits_7, score_joint)``.
    ``cache_dir=None`` disables the cache (always computes, writes nothing).
    """
    ids = [str(i) for i in ids]
    path = Path(cache_dir) / f"{key}.pt" if cache_dir else None
    if path is not None and path.is_file():
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            if stored.get("ids") == ids and stored.get("format") == CACHE_FORMAT:
                log.info("teacher soft targets: cache hit %s", path)
                return SoftTargets(ids, stored["score"], stored.get("logits_7"), key=key, from_cache=True,
                                   score_joint=stored.get("score_joint"))
            log.warning("teacher soft targets: %s does not match the data; recomputing", path)
        except Exception as err:  # truncated or foreign file: recompute rather than fail
            log.warning("teacher soft targets: unreadable cache %s (%s); recomputing", path, type(err).__name__)
    score, logits_7, *rest = compute()
    score_joint = rest[0] if rest else None
    if len(score) != len(ids):
        raise MmsentiError(f"teacher gave {len(score)} outputs for {len(ids)} samples")
    targets = SoftTargets(ids, score.float().cpu(), None if logits_7 is None else logits_7.float().cpu(), key=key,
                          score_joint=None if score_joint is None else score_joint.float().cpu())
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # atomic: a concurrent reader sees the whole file or none
        torch_save_atomic(path, {"format": CACHE_FORMAT, "ids": ids, "score": targets.score, "logits_7": targets.logits_7,
                                 "score_joint": targets.score_joint})
        log.info("teacher soft targets: cache miss, wrote %s (%d samples)", path, len(ids))
    return targets
