"""Window, lateness and alert maths — the one copy the Flink job and the batch recomputation share.

Times are epoch milliseconds. Tumbling windows are ``[start, start + size)`` with
``start = ts - ts mod size`` (Flink's ``TUMBLE`` with no offset). Event time follows Flink SQL's
bounded out-of-orderness watermark (``WATERMARK FOR ts AS ts - lateness``): the watermark is the
largest ``ts`` seen minus the lateness. A window fires when the watermark reaches ``end - 1``; an
event whose window has fired is **late** (:func:`is_late`) — the job sends it, scored, to the
late-events topic instead of dropping it.

A window result (:func:`window_result`) is built from three counters (polarity, 7-class, model
version) and the score sum; the job gets them from Flink (``COLLECT`` over the window), the batch
recomputation from :class:`WindowAccumulator`. A **reversal alert** (:func:`reversal_alert`) fires
when a product's positive rate moves by more than ``threshold`` between two consecutive windows
that both have at least ``min_count`` events (windows with fewer events are skipped: they neither
alert nor reset the comparison).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mmsenti.errors import MmsentiError
from mmsenti.runtime.repository import version_key
from mmsenti.text import SENTIMENT_CLASSES

CLASSES_7 = tuple(sorted(SENTIMENT_CLASSES))  # -3..3: the histogram's order
POLARITIES = ("positive", "negative", "neutral")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, None: 1000, "m": 60_000, "min": 60_000, "h": 3_600_000}


def parse_duration(text: str | int | float, what: str = "duration") -> int:
    """``"5s"`` / ``"500ms"`` / ``"1m"`` / ``2`` (seconds) → milliseconds (an integer ≥ 0)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = str(text)
    m = _DURATION.match(str(text))
    if not m:
        raise MmsentiError(f"{what}={text!r}: not a duration; write e.g. 5s, 500ms, 1m (a bare number is seconds)")
    ms = float(m.group(1)) * _UNIT_MS[m.group(2)]
    if ms != int(ms):
        raise MmsentiError(f"{what}={text!r}: not a whole number of milliseconds")
    return int(ms)


def window_start(ts: int, size: int) -> int:
    """Start of the tumbling window of length ``size`` ms holding ``ts`` (Flink's rule, no offset)."""
    return ts - (ts + size) % size


def is_late(ts: int, watermark: int | None, size: int) -> bool:
    """Whether ``ts``'s window already fired at ``watermark`` (None: no watermark yet, nothing is late)."""
    return watermark is not None and window_start(ts, size) + size - 1 <= watermark


@dataclass
class Watermark:
    """Flink SQL's bounded out-of-orderness watermark, for reasoning about a hand-made event list."""

    lateness: int  # ms
    value: int | None = None

    def observe(self, ts: int) -> int:
        candidate = ts - self.lateness
        self.value = candidate if self.value is None else max(self.value, candidate)
        return self.value


@dataclass
class WindowAccumulator:
    """The counters of one (product, window): what Flink's ``COLLECT``s hold for the job."""

    polarity: Counter = field(default_factory=Counter)
    class_7: Counter = field(default_factory=Counter)
    versions: Counter = field(default_factory=Counter)
    score_sum: float = 0.0

    def add(self, score: float, polarity: str, class_7: int, version: str) -> None:
        self.polarity[polarity] += 1
        self.class_7[int(class_7)] += 1
        self.versions[version] += 1
        self.score_sum += float(score)


def window_result(product_id: str, start: int, end: int, polarity: Mapping[str, int], class_7: Mapping[int, int],
                  versions: Mapping[str, int], score_sum: float) -> dict[str, Any]:
    """The published record of one window (see docs/streaming.md for the fields)."""
    count = int(sum(polarity.values()))
    if count <= 0:
        raise ValueError("a window result needs at least one event")
    if sum(class_7.values()) != count or sum(versions.values()) != count:
        raise ValueError(f"counters disagree for {product_id}@{start}: polarity {count}, class_7 "
                         f"{sum(class_7.values())}, versions {sum(versions.values())}")
    positives = int(polarity.get("positive", 0))
    by_version = {str(v): int(n) for v, n in sorted(versions.items(), key=lambda kv: version_key(str(kv[0])))}
    # the version that scored most of the window's events; a tie goes to the newer version
    majority = max(by_version, key=lambda v: (by_version[v], version_key(v)))
    return {
        "product_id": product_id,
        "window_start": int(start),
        "window_end": int(end),
        "count": count,
        "positives": positives,
        "negatives": int(polarity.get("negative", 0)),
        "positive_rate": positives / count,
        "mean_score": float(score_sum) / count,
        "class_7_hist": [int(class_7.get(c, 0)) for c in CLASSES_7],
        "model_version": majority,
        "model_versions": by_version,
    }


def reversal_alert(previous: Mapping[str, Any] | None, current: Mapping[str, Any], threshold: float,
                   min_count: int) -> dict[str, Any] | None:
    """An alert when the positive rate moved by more than ``threshold`` from ``previous`` to ``current``.

    ``previous`` is the product's last window with at least ``min_count`` events (None: none yet);
    returns None when either window has fewer than ``min_count`` events or the change is within
    the threshold.
    """
    if previous is None or current["count"] < min_count or previous["count"] < min_count:
        return None
    change = current["positive_rate"] - previous["positive_rate"]
    if abs(change) <= threshold:
        return None
    return {
        "product_id": current["product_id"],
        "window_start": current["window_start"],
        "window_end": current["window_end"],
        "previous_window_start": previous["window_start"],
        "previous_positive_rate": previous["positive_rate"],
        "positive_rate": current["positive_rate"],
        "change": change,
        "direction": "rise" if change > 0 else "drop",
        "count": current["count"],
        "previous_count": previous["count"],
        "threshold": threshold,
        "min_count": min_count,
        "model_version": current["model_version"],
    }


class ReversalTracker:
    """:func:`reversal_alert` over a stream of window results, per product (in window order)."""

    def __init__(self, threshold: float, min_count: int):
        self.threshold, self.min_count = float(threshold), int(min_count)
        self.last: dict[str, Mapping[str, Any]] = {}  # product → its last window with >= min_count events

    def update(self, result: Mapping[str, Any]) -> dict[str, Any] | None:
        if result["count"] < self.min_count:
            return None
        alert = reversal_alert(self.last.get(result["product_id"]), result, self.threshold, self.min_count)
        self.last[result["product_id"]] = result
        return alert


def alerts_for(results: Iterable[Mapping[str, Any]], threshold: float, min_count: int) -> list[dict[str, Any]]:
    """Every alert over finished window results (any order: sorted by product, then window)."""
    tracker = ReversalTracker(threshold, min_count)
    ordered = sorted(results, key=lambda r: (r["product_id"], r["window_start"]))
    return [a for a in (tracker.update(r) for r in ordered) if a is not None]
