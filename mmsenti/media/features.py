"""What every frame-level extractor returns, and how an extractor describes itself.

An extractor's :meth:`spec` (name, version, parameters, dimension names, rate) goes into the CSD
metadata of the files it writes; :func:`mmsenti.media.audio.build_audio_extractor` and
:func:`mmsenti.media.face.build_face_extractor` rebuild the same extractor from it, so prediction
uses the extractor and settings the training features came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FrameFeatures", "frame_grid"]


@dataclass
class FrameFeatures:
    """Frame-level features of one clip.

    ``features`` ``[n, d]`` float32 and ``intervals`` ``[n, 2]`` seconds cover every analysed
    frame; ``mask[i]`` is False for frames that carry nothing (no face found, silent track); those
    rows are zeros and are left out of CSD files (the SDK's convention for lost faces).
    ``stats`` holds per-clip numbers for reports (face-found fraction, voiced fraction, ...).
    """

    features: np.ndarray
    intervals: np.ndarray
    mask: np.ndarray
    names: list[str]
    rate: float
    spec: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def valid_fraction(self) -> float:
        return float(self.mask.mean()) if len(self.mask) else 0.0

    def valid_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """``(features, intervals)`` of the unmasked frames (what a CSD entry stores)."""
        return self.features[self.mask], self.intervals[self.mask]


def frame_grid(n: int, rate: float) -> np.ndarray:
    """``[n, 2]`` intervals ``[k / rate, (k + 1) / rate]`` (the SDK's frame layout)."""
    k = np.arange(n + 1, dtype=np.float64) / rate
    return np.stack([k[:-1], k[1:]], axis=1)
