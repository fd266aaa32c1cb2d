"""One clip -> features: audio prosody, facial expression and word timings of one media file.

:class:`Extractors` holds the audio and face extractors (built once per process); :func:`extract_clip`
runs them on one file and returns a :class:`ClipResult`. Used by the dataset runner
(:mod:`mmsenti.media.extract`) and by ``mmsenti predict`` on a raw clip (:mod:`mmsenti.media.predict`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .features import FrameFeatures
from .io import MediaError, probe, read_audio
from .text import Transcript, align_transcript

__all__ = ["DEFAULT_MAX_SECONDS", "ClipResult", "Extractors", "extract_clip"]

DEFAULT_MAX_SECONDS = 300.0


@dataclass
class Extractors:
    """The audio and face extractors (built once per process)."""

    audio: Any
    face: Any | None
    max_seconds: float = DEFAULT_MAX_SECONDS

    @classmethod
    def build(cls, audio: str | dict = "librosa_prosody", face: str | dict | None = "face_expression",
              max_seconds: float = DEFAULT_MAX_SECONDS, warm_up: bool = True) -> "Extractors":
        from .audio import build_audio_extractor
        from .face import build_face_extractor

        built = cls(build_audio_extractor(audio), build_face_extractor(face) if face is not None else None, max_seconds)
        if warm_up:
            built.warm_up()
        return built

    def warm_up(self) -> None:
        """Pay the one-off per-process costs now (librosa's lazy imports and cached numba kernels, ~2 s),
        so that timings of the first clip measure extraction, not start-up."""
        from .io import SAMPLE_RATE, Audio

        noise = np.random.default_rng(0).normal(0, 0.05, SAMPLE_RATE // 4).astype(np.float32)
        self.audio(Audio(noise, SAMPLE_RATE, SAMPLE_RATE, 1))

    def specs(self) -> dict[str, Any]:
        return {"audio": self.audio.spec(), "vision": self.face.spec() if self.face is not None else None,
                "max_seconds": self.max_seconds}


@dataclass
class ClipResult:
    """Everything extracted from one clip (a modality is ``None`` when the file lacks it)."""

    audio: FrameFeatures | None
    vision: FrameFeatures | None
    transcript: Transcript
    duration: float
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"duration": round(self.duration, 3), "words": len(self.transcript.words),
                               "word_timing": self.transcript.source}
        for m in ("audio", "vision"):
            f = getattr(self, m)
            out[m] = None if f is None else {"frames": len(f), "valid_frames": int(f.mask.sum()), "dim": f.dim,
                                             "rate": round(float(f.rate), 3),
                                             **{k: v for k, v in f.stats.items() if isinstance(v, (int, float, bool, type(None)))}}
        out["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        out["warnings"] = list(self.warnings)
        return out


def extract_clip(path: str | os.PathLike, text: str | None, extractors: Extractors,
                 timestamps: tuple[list[str], np.ndarray] | None = None) -> ClipResult:
    """Extract audio, vision and word timings from one media file.

    Raises :class:`~mmsenti.media.io.MediaError` when the file is unreadable or holds neither a
    usable audio nor a video stream; a missing or unusable single modality becomes ``None`` (or
    all-masked features) with a warning.
    """
    path = Path(path)
    started = time.perf_counter()
    info = probe(path)
    timings: dict[str, float] = {"probe": time.perf_counter() - started}
    warnings: list[str] = []
    audio_feats = vision_feats = None
    if info.has_audio:
        t = time.perf_counter()
        try:
            audio = read_audio(path, max_seconds=extractors.max_seconds)
            timings["audio_decode"] = time.perf_counter() - t
            t = time.perf_counter()
            audio_feats = extractors.audio(audio)
            timings["audio_features"] = time.perf_counter() - t
            warnings += audio_feats.warnings
        except MediaError as err:
            if not info.has_video:
                raise
            warnings.append(f"audio unusable ({err.problem}): audio masked")
    else:
        warnings.append("no audio track: audio masked")
    if info.has_video and extractors.face is not None:
        t = time.perf_counter()
        try:
            vision_feats = extractors.face.from_path(path, max_seconds=extractors.max_seconds)
            warnings += vision_feats.warnings
        except MediaError as err:
            if audio_feats is None:
                raise
            warnings.append(f"video unusable ({err.problem}): vision masked")
        timings["vision"] = time.perf_counter() - t
    elif not info.has_video:
        warnings.append("no video stream: vision masked")
    if audio_feats is None and vision_feats is None:
        raise MediaError(path, "neither a usable audio track nor a video stream")
    ends = [f.intervals[-1, 1] for f in (audio_feats, vision_feats) if f is not None and len(f)]
    duration = float(max(ends)) if ends else float(info.duration or 0.0)
    if info.duration and extractors.max_seconds and info.duration > extractors.max_seconds:
        warnings.append(f"clip is {info.duration:.1f} s long: only the first {extractors.max_seconds:g} s were used")
    elif info.duration and duration < info.duration - 0.5:
        warnings.append(f"decoded {duration:.2f} s of the {info.duration:.2f} s the container declares: file truncated?")
    transcript = align_transcript(text, duration, audio_feats, timestamps)
    warnings += transcript.warnings
    timings["total"] = time.perf_counter() - started
    return ClipResult(audio_feats, vision_feats, transcript, duration, _dedupe(warnings), timings)


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
