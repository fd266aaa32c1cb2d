"""The one batch every dataset yields, and the collate function that builds it.

A *sample* is a plain dict (what datasets return)::

    {"id": "videoid[3]", "text": "i loved it",
     "audio": float32 [Ta, Da] or None, "vision": float32 [Tv, Dv] or None,
     "label": float in [-3, 3],
     "label_T" / "label_A" / "label_V": float (optional: CH-SIMS's unimodal labels)}

A missing modality (``None`` or zero frames) becomes an all-zero mask, never a separate code path.
Unimodal labels (CH-SIMS, Yu et al., 2020: what Self-MM-style models and SIMS evaluation use) become
``text_labels`` / ``audio_labels`` / ``vision_labels``: ``None`` when no sample of the batch has them,
else ``[B]`` float with NaN for a sample without one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from mmsenti.text import check_normalization, normalize_text

from .mmsa import UNIMODAL_LABEL_COLUMNS

#: Batch field -> the sample key that carries it (``label_T`` ...: MMSA's names).
UNIMODAL_LABEL_FIELDS: dict[str, str] = dict(zip(("text_labels", "audio_labels", "vision_labels"),
                                                 UNIMODAL_LABEL_COLUMNS))


@dataclass
class SentimentBatch:
    """Named tensors for one mini-batch (Lightning moves dataclasses between devices)."""

    input_ids: torch.Tensor  # [B, L] long
    attention_mask: torch.Tensor  # [B, L] long (1 = real token)
    audio: torch.Tensor  # [B, Ta, Da] float
    audio_mask: torch.Tensor  # [B, Ta] bool (True = real frame)
    vision: torch.Tensor  # [B, Tv, Dv] float
    vision_mask: torch.Tensor  # [B, Tv] bool
    labels: torch.Tensor  # [B] float sentiment in [-3, 3]
    ids: list[str] = field(default_factory=list)
    # unimodal labels (CH-SIMS label_T / label_A / label_V): [B] float, NaN where a sample has none; None: no data
    text_labels: torch.Tensor | None = None
    audio_labels: torch.Tensor | None = None
    vision_labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> "SentimentBatch":
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return SentimentBatch(**moved)


def pad_frames(seqs: list[np.ndarray | None], dim: int, max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad variable-length frame sequences to ``[B, T, dim]`` with a boolean mask.

    ``None`` or an empty array gives an all-False mask row. At least one time step is kept so
    shapes stay valid when a whole batch lacks the modality.
    """
    lengths = [0 if s is None else min(len(s), max_len or len(s)) for s in seqs]
    t = max(1, max(lengths, default=0))
    out = torch.zeros(len(seqs), t, dim, dtype=torch.float32)
    mask = torch.zeros(len(seqs), t, dtype=torch.bool)
    for i, (s, n) in enumerate(zip(seqs, lengths)):
        if n:
            if s.shape[1] != dim:
                raise ValueError(f"sample {i}: feature width {s.shape[1]} != expected {dim}")
            out[i, :n] = torch.from_numpy(np.ascontiguousarray(s[:n], dtype=np.float32))
            mask[i, :n] = True
    return out, mask


class SentimentCollator:
    """Normalises and tokenises text, pads audio/vision into a :class:`SentimentBatch`.

    ``text_normalization``: the model's rule (:func:`mmsenti.text.normalize_text`), the same one the
    runtime applies to an export's input.
    """

    def __init__(self, tokenizer, audio_dim: int, vision_dim: int, max_text_len: int = 64, max_frames: int | None = None,
                 text_normalization: str = "none"):
        self.tokenizer = tokenizer
        self.text_normalization = check_normalization(text_normalization, "data.text_normalization")
        self.audio_dim = audio_dim
        self.vision_dim = vision_dim
        self.max_text_len = max_text_len
        self.max_frames = max_frames

    def __call__(self, samples: list[dict]) -> SentimentBatch:
        texts = [normalize_text(s.get("text"), self.text_normalization) for s in samples]
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_text_len, return_tensors="pt")
        audio, audio_mask = pad_frames([s.get("audio") for s in samples], self.audio_dim, self.max_frames)
        vision, vision_mask = pad_frames([s.get("vision") for s in samples], self.vision_dim, self.max_frames)
        return SentimentBatch(
            input_ids=tok["input_ids"],
            attention_mask=tok["attention_mask"],
            audio=audio,
            audio_mask=audio_mask,
            vision=vision,
            vision_mask=vision_mask,
            labels=torch.tensor([float(s["label"]) for s in samples], dtype=torch.float32),
            ids=[str(s["id"]) for s in samples],
            **{name: unimodal_labels(samples, key) for name, key in UNIMODAL_LABEL_FIELDS.items()},
        )


def unimodal_labels(samples: list[dict], key: str) -> torch.Tensor | None:
    """``[B]`` float of ``sample[key]`` (NaN where absent), or ``None`` when no sample has ``key``."""
    values = [s.get(key) for s in samples]
    if all(v is None for v in values):
        return None
    return torch.tensor([float("nan") if v is None else float(v) for v in values], dtype=torch.float32)
