"""Transcript tokens and word timings (what ``CMU_MOSI_TimestampedWords.csd`` holds).

Word-level alignment (``data.mode=aligned``, the default) averages audio/vision frames over each
word's interval, so every word needs a time span:

* **given timestamps** win: a ``<clip>.words.json`` next to the media file (``[{"word": "so",
  "start": 0.12, "end": 0.30}, ...]`` or ``[["so", 0.12, 0.30], ...]``, seconds from the clip
  start; e.g. from a forced aligner or an ASR system), or ``--words FILE`` at prediction time;
* otherwise the words are **spread over the utterance**: the speech span runs from the first to
  the last 10 ms audio frame whose loudness is above -60 dBFS and within 35 dB of the clip's
  loudest frame (the whole clip when there is no usable audio), and each word gets a share of it
  proportional to its character count + 1 (a rough stand-in for its spoken length), in order,
  back to back. Extraction and ``mmsenti predict`` use this same rule, so a model sees the same
  kind of alignment at training and at prediction time.

Tokens: :func:`mmsenti.text.transcript_words`, the ``transcript`` normalisation rule (lower-cased,
as MOSI transcripts are, split on white space, punctuation stripped from both ends of each token).
An empty transcript gives no words and a warning (the segment is then text-less).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmsenti.errors import MmsentiError
from mmsenti.text import transcript_words as tokenize  # the one transcript rule (mmsenti.text)

from .features import FrameFeatures

__all__ = ["Transcript", "align_transcript", "read_word_timestamps", "speech_span", "tokenize"]

SPEECH_FLOOR_DB = -60.0
SPEECH_RANGE_DB = 35.0


@dataclass
class Transcript:
    """Words with ``[n, 2]`` second intervals; ``source`` is ``"timestamps"``, ``"spread"`` or ``"empty"``."""

    words: list[str]
    intervals: np.ndarray
    source: str
    warnings: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(self.words)


def speech_span(audio: FrameFeatures | None, duration: float) -> tuple[float, float]:
    """``(start, end)`` seconds of speech judged from the loudness column (whole clip without audio)."""
    if audio is None or not audio.mask.any() or "loudness_db" not in audio.names or duration <= 0:
        return 0.0, max(duration, 0.0)
    loud = audio.features[:, audio.names.index("loudness_db")]
    active = audio.mask & (loud > SPEECH_FLOOR_DB) & (loud > loud[audio.mask].max() - SPEECH_RANGE_DB)
    if not active.any():
        return 0.0, duration
    idx = np.flatnonzero(active)
    start, end = float(audio.intervals[idx[0], 0]), float(min(audio.intervals[idx[-1], 1], duration))
    return (start, end) if end - start > 0.05 else (0.0, duration)


def spread_words(words: list[str], start: float, end: float) -> np.ndarray:
    """Back-to-back intervals over ``[start, end]``, each proportional to ``len(word) + 1``."""
    if not words:
        return np.zeros((0, 2))
    weights = np.array([len(w) + 1 for w in words], dtype=np.float64)
    edges = start + (end - start) * np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum()
    return np.stack([edges[:-1], edges[1:]], axis=1)


def read_word_timestamps(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Words and ``[n, 2]`` intervals from a ``.words.json`` file (see the module docstring)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        rows = [(r["word"], r["start"], r["end"]) if isinstance(r, dict) else tuple(r) for r in raw]
        words = [str(w) for w, _, _ in rows]
        intervals = np.array([[float(s), float(e)] for _, s, e in rows], dtype=np.float64).reshape(-1, 2)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MmsentiError(f"{path}: not a word-timestamp file ([{{'word', 'start', 'end'}}, ...]): {err}") from err
    if len(intervals) and (not np.isfinite(intervals).all() or (intervals[:, 1] < intervals[:, 0]).any()):
        raise MmsentiError(f"{path}: word timestamps must be finite with end >= start")
    return words, intervals


def align_transcript(
    text: str | None,
    duration: float,
    audio: FrameFeatures | None = None,
    timestamps: tuple[list[str], np.ndarray] | None = None,
) -> Transcript:
    """Tokens of ``text`` with intervals: given ``timestamps`` or spread over the speech span."""
    if timestamps is not None:
        words, intervals = timestamps
        keep = [i for i, w in enumerate(words) if tokenize(w)]
        words = [" ".join(tokenize(words[i])) for i in keep]
        intervals = np.asarray(intervals, dtype=np.float64)[keep]
        warnings = []
        if len(intervals) and duration > 0 and intervals[:, 1].max() > duration + 0.5:
            warnings.append(f"word timestamps run past the clip's end ({intervals[:, 1].max():.2f} s > {duration:.2f} s)")
        return Transcript(words, intervals.reshape(-1, 2), "timestamps" if words else "empty", warnings)
    words = tokenize(text)
    if not words:
        return Transcript([], np.zeros((0, 2)), "empty", ["empty transcript: no words (text masked)"])
    start, end = speech_span(audio, duration)
    if end <= start:
        end = start + 0.3 * len(words)  # no duration known: a nominal 0.3 s a word keeps intervals valid
    return Transcript(words, spread_words(words, start, end), "spread")
