"""Vectorised alignment of frame-rate features to word and segment intervals (SDK convention).

Why: the CMU SDK's ``mmdataset.align`` walks every word in Python and intersects it with every
frame of the video (~30 s and 1.2 GB for CMU-MOSI). The same result comes from two binary searches
and one ``ufunc.reduceat`` per video (~0.3 s).

The convention reproduced exactly (``cmu-multimodal-sdk`` 0.0.6, ``epsilon = 1e-3``):

* a frame counts for an interval ``[start, end]`` when they overlap by more than ``eps``:
  ``min(frame_end, end) - max(frame_start, start) > eps``; partial frames at both edges count;
* a reference interval no longer than ``eps`` gets no frames (the SDK drops it).

For frames sorted by start whose ends are also non-decreasing (every regular frame grid), the
frames of an interval form one contiguous range::

    lo = searchsorted(frame_end,   start + eps, "right")   # first frame ending after start+eps
    hi = searchsorted(frame_start, end - eps,   "left")    # frames starting before end-eps

and ``np.add.reduceat`` over the interleaved ``[lo, hi]`` indices gives the sums (an empty range
``lo >= hi`` would make ``reduceat`` return a single row, so those are masked to zero and counted).
Frames with non-monotone ends or near-zero length take a general path that expands
(interval, frame) candidate pairs and keeps those passing the exact overlap test.

:func:`reference_collapse` is a slow pure-Python transcription of the SDK's rule, used only by
the tests to check the vectorised code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "EPS",
    "AlignedFeatures",
    "Collapse",
    "collapse_frames",
    "overlap_pairs",
    "overlap_ranges",
    "reference_collapse",
    "select_frames",
    "sort_by_start",
    "subsample_frames",
]

#: Overlap threshold used by ``cmu-multimodal-sdk`` 0.0.6 (``epsilon = 10e-4``; upstream uses 1e-5).
EPS = 1e-3

Collapse = Literal["mean", "max", "first"]
_COLLAPSES = ("mean", "max", "first")


@dataclass
class AlignedFeatures:
    """Frame features collapsed onto reference intervals.

    ``features[i]`` summarises the frames of interval ``i`` (zeros when ``counts[i] == 0``);
    ``counts[i]`` is the number of frames that overlapped it.
    """

    features: np.ndarray  # [n_intervals, D] float32
    counts: np.ndarray  # [n_intervals] int64

    @property
    def num_empty(self) -> int:
        return int(np.count_nonzero(self.counts == 0))


def sort_by_start(features: np.ndarray, intervals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(features, intervals)`` ordered by start time (stable; no copy if already sorted)."""
    starts = intervals[:, 0]
    if starts.size < 2 or np.all(starts[1:] >= starts[:-1]):
        return features, intervals
    order = np.argsort(starts, kind="stable")
    return features[order], intervals[order]


def _is_regular(frame_intervals: np.ndarray, eps: float) -> bool:
    """Sorted starts, non-decreasing ends and every frame longer than ``eps``: the contiguous case."""
    fs, fe = frame_intervals[:, 0], frame_intervals[:, 1]
    if fs.size == 0:
        return True
    return bool(np.all(fs[1:] >= fs[:-1]) and np.all(fe[1:] >= fe[:-1]) and np.all(fe - fs > eps))


def overlap_ranges(frame_intervals: np.ndarray, query_intervals: np.ndarray, eps: float = EPS) -> tuple[np.ndarray, np.ndarray]:
    """``[lo, hi)`` frame index range overlapping each query by more than ``eps``.

    Exact for frames sorted by start with non-decreasing ends (words, regular frame grids, segment
    lists); ``hi == lo`` for an empty range (including queries no longer than ``eps``).
    """
    frame_intervals = np.asarray(frame_intervals, dtype=np.float64)
    q = np.asarray(query_intervals, dtype=np.float64).reshape(-1, 2)
    lo = np.searchsorted(frame_intervals[:, 1], q[:, 0] + eps, side="right")
    hi = np.searchsorted(frame_intervals[:, 0], q[:, 1] - eps, side="left")
    hi = np.where(q[:, 1] - q[:, 0] > eps, np.maximum(hi, lo), lo)
    return lo.astype(np.int64), hi.astype(np.int64)


def select_frames(frame_intervals: np.ndarray, start: float, end: float, eps: float = EPS) -> slice:
    """Slice of the (sorted, regular) frames overlapping ``[start, end]`` by more than ``eps``."""
    lo, hi = overlap_ranges(frame_intervals, np.array([[start, end]]), eps)
    return slice(int(lo[0]), int(hi[0]))


def _pairs(frame_intervals: np.ndarray, q: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """General path: (query index, frame index) pairs overlapping by more than ``eps``, query-major."""
    fs, fe = frame_intervals[:, 0], frame_intervals[:, 1]
    lo = np.searchsorted(np.maximum.accumulate(fe), q[:, 0] + eps, side="right")
    hi = np.searchsorted(fs, q[:, 1] - eps, side="left")
    n = np.clip(hi - lo, 0, None)
    q_idx = np.repeat(np.arange(len(q)), n)
    offsets = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    f_idx = np.repeat(lo, n) + offsets
    overlap = np.minimum(fe[f_idx], q[q_idx, 1]) - np.maximum(fs[f_idx], q[q_idx, 0])
    keep = (overlap > eps) & (q[q_idx, 1] - q[q_idx, 0] > eps)
    return q_idx[keep], f_idx[keep]


def overlap_pairs(frame_intervals: np.ndarray, query_intervals: np.ndarray, eps: float = EPS) -> tuple[np.ndarray, np.ndarray]:
    """All ``(query index, frame index)`` pairs overlapping by more than ``eps``, grouped by query.

    Frames must be sorted by start (see :func:`sort_by_start`); any frame lengths and overlaps are
    handled (a regular grid takes the contiguous-range fast path).
    """
    fiv = np.asarray(frame_intervals, dtype=np.float64).reshape(-1, 2)
    q = np.asarray(query_intervals, dtype=np.float64).reshape(-1, 2)
    if len(fiv) == 0 or len(q) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if not _is_regular(fiv, eps):
        return _pairs(fiv, q, eps)
    lo, hi = overlap_ranges(fiv, q, eps)
    n = hi - lo
    q_idx = np.repeat(np.arange(len(q), dtype=np.int64), n)
    f_idx = np.repeat(lo, n) + (np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n))
    return q_idx, f_idx


def _reduce(values: np.ndarray, starts: np.ndarray, ends: np.ndarray, how: str) -> np.ndarray:
    """Reduce contiguous row ranges ``values[starts[i]:ends[i]]`` (all non-empty)."""
    if how == "first":
        return values[starts].astype(np.float32)
    padded = np.concatenate([values, np.zeros((1, values.shape[1]), values.dtype)])  # lets hi == len
    idx = np.stack([starts, ends], axis=1).ravel()
    if how == "mean":
        sums = np.add.reduceat(padded, idx, axis=0, dtype=np.float64)[::2]
        return (sums / (ends - starts)[:, None]).astype(np.float32)
    return np.maximum.reduceat(padded, idx, axis=0)[::2].astype(np.float32)


def collapse_frames(
    frame_features: np.ndarray,
    frame_intervals: np.ndarray,
    query_intervals: np.ndarray,
    how: Collapse = "mean",
    eps: float = EPS,
) -> AlignedFeatures:
    """Collapse frame features onto each query interval (e.g. word) with the SDK's overlap rule.

    ``how``: ``"mean"`` (the SDK's ``avg``, accumulated in float64), ``"max"`` or ``"first"``.
    Queries that no frame overlaps get a zero row and ``counts == 0``. Frames need not be sorted;
    non-finite values propagate (clean them first if you do not want that).
    """
    if how not in _COLLAPSES:
        raise ValueError(f"collapse must be one of {_COLLAPSES}, got {how!r}")
    feats = np.asarray(frame_features)
    if feats.ndim == 1:
        feats = feats[:, None]
    fiv = np.asarray(frame_intervals, dtype=np.float64).reshape(-1, 2)
    q = np.asarray(query_intervals, dtype=np.float64).reshape(-1, 2)
    out = np.zeros((len(q), feats.shape[1]), dtype=np.float32)
    counts = np.zeros(len(q), dtype=np.int64)
    if len(q) == 0 or len(fiv) == 0:
        return AlignedFeatures(out, counts)
    feats, fiv = sort_by_start(feats, fiv)

    if _is_regular(fiv, eps):
        lo, hi = overlap_ranges(fiv, q, eps)
        counts = hi - lo
        nz = counts > 0
        if nz.any():
            out[nz] = _reduce(feats, lo[nz], hi[nz], how)
        return AlignedFeatures(out, counts)

    q_idx, f_idx = _pairs(fiv, q, eps)
    counts = np.bincount(q_idx, minlength=len(q)).astype(np.int64)
    if q_idx.size:
        gathered = feats[f_idx]
        nz = counts > 0
        ends = np.cumsum(counts[nz])
        out[nz] = _reduce(gathered, ends - counts[nz], ends, how)
    return AlignedFeatures(out, counts)


def subsample_frames(frames: np.ndarray, max_frames: int | None) -> np.ndarray:
    """At most ``max_frames`` rows, evenly spaced over the whole sequence (keeps the first row)."""
    n = len(frames)
    if max_frames is None or n <= max_frames:
        return frames
    if max_frames <= 0:
        return frames[:0]
    idx = (np.arange(max_frames) * n) // max_frames
    return frames[idx]


def reference_collapse(
    frame_features: np.ndarray,
    frame_intervals: np.ndarray,
    query_intervals: np.ndarray,
    how: Collapse = "mean",
    eps: float = EPS,
) -> AlignedFeatures:
    """Slow pure-Python transcription of the SDK rule, for tests only (one loop per word and frame)."""
    feats = np.asarray(frame_features, dtype=np.float64)
    if feats.ndim == 1:
        feats = feats[:, None]
    d = feats.shape[1]
    rows, counts = [], []
    frames = sorted(
        [(float(a), float(b), i) for i, (a, b) in enumerate(np.asarray(frame_intervals, dtype=np.float64))],
        key=lambda t: t[0],
    )
    for ws, we in np.asarray(query_intervals, dtype=np.float64).reshape(-1, 2):
        hits = []
        if abs(we - ws) > eps:  # the SDK skips reference intervals shorter than eps
            for fs, fe, i in frames:
                if min(fe, we) - max(fs, ws) > eps:
                    hits.append(feats[i])
        counts.append(len(hits))
        if not hits:
            rows.append([0.0] * d)
        elif how == "mean":
            rows.append([sum(h[j] for h in hits) / len(hits) for j in range(d)])
        elif how == "max":
            rows.append([max(h[j] for h in hits) for j in range(d)])
        else:
            rows.append(list(hits[0]))
    return AlignedFeatures(np.array(rows, dtype=np.float32).reshape(-1, d), np.array(counts, dtype=np.int64))
