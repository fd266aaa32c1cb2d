"""Model updates behind an A/B split and shadow traffic: routing, per-variant statistics, the comparison tests.

* **Split.** ``POST /v1/models {"traffic": {"primary": 0.9, "candidate": 0.1}}`` (loaded model
  names → shares summing to 1; the active model must be one of them: it is the *primary*, the
  control). A request that names no ``model`` goes to one variant: **sticky by key** when it
  carries one (``key`` or ``user_id`` field, else the ``X-User-Id`` or ``X-Session-Id`` header):
  blake2b of the key → a point ``u`` in [0, 1), and the variants own consecutive intervals of
  [0, 1) in the split's order, primary first — so a key always meets the same variant while the
  split stands, and raising a candidate's share (10% → 20%) only moves keys *to* it. Without a
  key, ``u`` is random. A request naming ``model`` bypasses the split.
* **Shadow.** ``{"shadow": "candidate"}``: every routed request not answered by the candidate is
  copied to it *after* the answer was sent (a background task that only enqueues); the
  candidate's answers are compared with the live ones (score MAE, polarity agreement, McNemar's
  test of the positive calls) and never returned. Shadow work goes first under load: the queue
  holds ``--shadow-queue`` requests (more are dropped and counted), and a copy is dropped when the
  answering model has a backlog (``max_batch`` items or more queued) or the candidate's queue is full
  (and, counted apart, when its items carry frames the candidate's engine does not take).
* **Statistics** (``GET /v1/experiments``), per variant since the experiment began: requests,
  items, errors, mean score, polarity mix, latency p50/p90/p99 (the last 50k requests), answered
  from cache; each variant against the primary, a two-proportion z-test of the positive share
  (two-sided p-value): a drifted candidate shows before it is promoted.
* ``{"action": "promote", "name"?}`` makes the candidate (default: the split's other variant, or
  the shadow) the active model and ends the experiment; ``{"action": "rollback"}`` ends it with all
  traffic on the primary. The ended experiment's statistics stay readable (``last``).

In-process state: with ``--workers N`` each process would route alone, so ``POST /v1/models`` is
refused there (409), as for loads.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmsenti.errors import MmsentiError
from mmsenti.serve.batcher import Draining, QueueFull

log = logging.getLogger("mmsenti.serve")

LATENCY_WINDOW = 50_000  # requests per variant kept for latency percentiles
SHADOW_WORKERS = 8  # shadow requests in flight at once (each waits on the candidate's batcher)
SPLIT_TOL = 1e-6


class ExperimentError(MmsentiError):
    """A traffic/shadow/promote/rollback request that cannot be applied (the API answers 409/422)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def key_point(key: str) -> float:
    """A request key's point in [0, 1): the first 8 bytes of its blake2b digest."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, person=b"mmsenti-ab1").digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> tuple[float | None, float | None]:
    """z and two-sided p-value of ``x2/n2 - x1/n1`` (pooled standard error); None when a side is empty."""
    if n1 == 0 or n2 == 0:
        return None, None
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:
        return 0.0, 1.0
    z = (x2 / n2 - x1 / n1) / se
    return z, math.erfc(abs(z) / math.sqrt(2.0))


def mcnemar(b: int, c: int) -> float | None:
    """Two-sided p-value of McNemar's test with continuity correction (paired calls; ``b``, ``c`` the discordant counts)."""
    if b + c == 0:
        return None
    chi2 = (abs(b - c) - 1.0) ** 2 / (b + c) if abs(b - c) > 1 else 0.0
    return math.erfc(math.sqrt(chi2 / 2.0))


def _pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000.0, 3) if len(values) else None


@dataclass
class VariantStats:
    requests: int = 0
    items: int = 0
    errors: int = 0
    cached: int = 0
    score_sum: float = 0.0
    polarity: dict[str, int] = field(default_factory=lambda: {"positive": 0, "negative": 0, "neutral": 0})
    latency_s: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def record(self, answers: Sequence[dict], seconds: float) -> None:
        self.requests += 1
        self.latency_s.append(seconds)
        for a in answers:
            self.items += 1
            self.score_sum += a["score"]
            self.polarity[a["polarity"]] += 1
            self.cached += a["cached"] is not None

    def describe(self) -> dict[str, Any]:
        lat = np.fromiter(self.latency_s, float, len(self.latency_s))
        n = self.items
        return {"requests": self.requests, "items": n, "errors": self.errors, "cached_items": self.cached,
                "mean_score": round(self.score_sum / n, 6) if n else None,
                "polarity": dict(self.polarity),
                "positive_share": round(self.polarity["positive"] / n, 6) if n else None,
                "latency_ms": {"p50": _pct(lat, 50), "p90": _pct(lat, 90), "p99": _pct(lat, 99)}}


@dataclass
class ShadowStats:
    compared_requests: int = 0
    items: int = 0
    abs_diff_sum: float = 0.0
    agree: int = 0
    live_only_positive: int = 0  # McNemar's discordant pairs
    shadow_only_positive: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {"queue": 0, "load": 0, "incompatible": 0})
    failed: int = 0

    def describe(self) -> dict[str, Any]:
        n = self.items
        return {"compared_requests": self.compared_requests, "items": n,
                "score_mae": round(self.abs_diff_sum / n, 6) if n else None,
                "polarity_agreement": round(self.agree / n, 6) if n else None,
                "positive_calls": {"live_only": self.live_only_positive, "shadow_only": self.shadow_only_positive,
                                   "mcnemar_p": mcnemar(self.live_only_positive, self.shadow_only_positive)},
                "dropped": dict(self.dropped), "failed": self.failed}


@dataclass
class _ShadowJob:
    live_model: Any
    items: list
    mode: str
    answers: list


class Router:
    """The A/B split and the shadow over a :class:`~mmsenti.serve.models.ModelRegistry` (see the module docstring)."""

    def __init__(self, registry, answerer, metrics, max_batch: int = 32, shadow_queue: int = 256):
        self.registry = registry
        self.answerer = answerer
        self.metrics = metrics
        self.max_batch = max_batch
        self.split: dict[str, float] | None = None
        self.primary: str | None = None
        self.shadow: str | None = None
        self.started_at: float | None = None
        self.stats: dict[str, VariantStats] = {}
        self.shadow_stats = ShadowStats()
        self.last: dict[str, Any] | None = None
        self._intervals: list[tuple[float, str]] = []
        self._queue: asyncio.Queue | None = None
        self._queue_size = shadow_queue
        self._workers: list[asyncio.Task] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self._queue_size)
        self._workers = [asyncio.get_running_loop().create_task(self._shadow_worker(), name=f"shadow-{i}")
                         for i in range(SHADOW_WORKERS)]

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    @property
    def running(self) -> bool:
        return self.split is not None or self.shadow is not None

    # ------------------------------------------------------------------ routing
    def route(self, explicit: str | None, key: str | None):
        """The model a request goes to: ``explicit`` if named, else its split variant, else the active model."""
        if explicit is not None or self.split is None:
            return self.registry.get(explicit)
        u = key_point(key) if key else random.random()
        for upper, name in self._intervals:
            if u < upper:
                break
        model = self.registry.models.get(name)
        return model if model is not None else self.registry.get()

    def record(self, model, answers: Sequence[dict], seconds: float) -> None:
        if not self.running:
            return
        self._variant(model.name).record(answers, seconds)

    def error(self, model_name: str | None) -> None:
        if self.running and model_name:
            self._variant(model_name).errors += 1

    def _variant(self, name: str) -> VariantStats:
        stats = self.stats.get(name)
        if stats is None:
            stats = self.stats[name] = VariantStats()
        return stats

    # ------------------------------------------------------------------ changes
    def set_traffic(self, weights: dict[str, float]) -> None:
        if not weights:
            raise ExperimentError("traffic: give loaded model names and their shares, "
                                  "e.g. {\"primary\": 0.9, \"candidate\": 0.1}")
        for name, w in weights.items():
            self.registry.get(name)  # UnknownModel: 404 naming the loaded ones
            if not 0.0 <= w <= 1.0:
                raise ExperimentError(f"traffic.{name}: share {w} is outside [0, 1]")
        total = sum(weights.values())
        if abs(total - 1.0) > SPLIT_TOL:
            raise ExperimentError(f"traffic: shares sum to {total:g}; they must sum to 1")
        active = self.registry.active
        if active not in weights:
            raise ExperimentError(f"traffic: the active model {active!r} must be in the split (it is the primary, the "
                                  f"control); activate another first or add {active!r}")
        order = [active, *[n for n in weights if n != active]]
        upper, intervals = 0.0, []
        for name in order:
            upper += weights[name]
            intervals.append((upper, name))
        intervals[-1] = (float("inf"), intervals[-1][1])  # rounding never leaves a point unassigned
        self._begin()
        self.split = {n: float(weights[n]) for n in order}
        self.primary = active
        self._intervals = intervals
        self.export_weights()
        log.info("traffic split %s (primary %s)", self.split, active)

    def set_shadow(self, name: str | None) -> None:
        if name is not None:
            self.registry.get(name)
            if name == self.registry.active:
                raise ExperimentError(f"shadow: {name!r} is the active model; shadow a candidate (load it under another name)")
        if not self.running:
            self._begin()
        self.shadow = name
        self.shadow_stats = ShadowStats()
        if self.primary is None:
            self.primary = self.registry.active
        log.info("shadow traffic %s", f"to {name}" if name else "off")

    def candidate(self) -> str | None:
        """The experiment's candidate: the split's largest non-primary share, else the shadow."""
        others = [(w, n) for n, w in (self.split or {}).items() if n != self.primary]
        if others:
            return max(others)[1]
        return self.shadow

    def promote(self, name: str | None):
        name = name or self.candidate()
        if name is None:
            raise ExperimentError("promote: no experiment is running; name the model to promote (\"name\")")
        model = self.registry.get(name)
        self._end("promoted", name)
        self.registry.active = name
        self.export_weights()
        log.info("promoted %s version %s", name, model.version)
        return model

    def rollback(self):
        if not self.running:
            raise ExperimentError("rollback: no experiment is running", status=409)
        primary = self.primary if self.primary in self.registry.models else self.registry.active
        self._end("rolled back", primary)
        self.registry.active = primary
        self.export_weights()
        log.info("rolled back to %s", primary)
        return self.registry.get(primary)

    def holds(self, name: str) -> bool:
        """Whether ``name`` takes part in the running experiment (it must not be unloaded or deactivated)."""
        return name == self.shadow or (self.split is not None and name in self.split)

    def _begin(self) -> None:
        if not self.running:
            self.stats = {}
            self.started_at = time.time()

    def _end(self, outcome: str, active: str) -> None:
        self.last = {**self.describe(), "ended_at": time.time(), "outcome": outcome, "active": active}
        self.split = self.primary = self.shadow = None
        self._intervals = []
        self.stats = {}
        self.shadow_stats = ShadowStats()
        self.started_at = None

    def export_weights(self) -> None:
        gauge = self.metrics.traffic_weight
        gauge.clear()
        weights = self.split or ({self.registry.active: 1.0} if self.registry.active else {})
        for name, w in weights.items():
            gauge.labels(name).set(w)

    # ------------------------------------------------------------------ the report
    def describe(self) -> dict[str, Any]:
        variants = {name: s.describe() for name, s in self.stats.items()}
        primary = self.stats.get(self.primary) if self.primary else None
        comparisons = {}
        for name, s in self.stats.items():
            if primary is None or name == self.primary:
                continue
            n1, n2 = primary.items, s.items
            x1, x2 = primary.polarity["positive"], s.polarity["positive"]
            z, p = two_proportion_z(x1, n1, x2, n2)
            both = bool(n1 and n2)
            comparisons[name] = {
                "against": self.primary, "positive_share_diff": round(x2 / n2 - x1 / n1, 6) if both else None,
                "z": round(z, 4) if z is not None else None, "p_value": p,
                "mean_score_diff": round(s.score_sum / n2 - primary.score_sum / n1, 6) if both else None}
        shadow = None
        if self.shadow is not None:
            shadow = {"model": self.shadow, "queued": self._queue.qsize() if self._queue else 0,
                      **self.shadow_stats.describe()}
        split = self.split
        return {"running": self.running, "since": self.started_at, "primary": self.primary, "traffic": split,
                "observed_split": ({n: round(s.requests / max(1, sum(v.requests for v in self.stats.values())), 6)
                                    for n, s in self.stats.items()} if self.stats else None),
                "variants": variants, "tests": comparisons, "shadow": shadow, "last": self.last}

    # ------------------------------------------------------------------ shadow
    def shadow_copy(self, live_model, items: list, mode: str, answers: list) -> _ShadowJob | None:
        """The shadow job of an answered request, or None (no shadow, or the shadow answered it itself)."""
        if self.shadow is None or live_model.name == self.shadow:
            return None
        return _ShadowJob(live_model, items, mode, answers)

    def enqueue(self, job: _ShadowJob) -> None:
        """Runs after the live answer was sent (a response background task): enqueue or drop, never wait."""
        if self._queue is None or self.shadow is None:
            return
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self._dropped("queue")
        self.metrics.shadow_queue.set(self._queue.qsize())

    def _dropped(self, why: str) -> None:
        self.shadow_stats.dropped[why] += 1
        self.metrics.shadow.labels(self.shadow or "", f"dropped_{why}").inc()

    async def _shadow_worker(self) -> None:
        while True:
            job = await self._queue.get()
            self.metrics.shadow_queue.set(self._queue.qsize())
            try:
                await self._run_shadow(job)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a shadow never takes anything down
                self.shadow_stats.failed += 1
                self.metrics.shadow.labels(self.shadow or "", "failed").inc()
                log.warning("shadow request failed: %s: %s", type(err).__name__, err)

    async def _run_shadow(self, job: _ShadowJob) -> None:
        name = self.shadow
        model = self.registry.models.get(name) if name else None
        if model is None:
            return
        live = job.live_model.batcher
        if live is not None and live.queued >= self.max_batch:
            self._dropped("load")
            return
        takes = set(model.frame_modalities)
        if any((it.audio and "audio" not in takes) or (it.vision and "vision" not in takes) for it in job.items):
            self._dropped("incompatible")  # frames the candidate's engine does not take: nothing to compare
            return
        try:
            answers = await self.answerer.answer(model, job.items, job.mode, record=False)
        except (QueueFull, Draining):
            self._dropped("queue")
            return
        if name != self.shadow:  # the experiment changed meanwhile
            return
        stats = self.shadow_stats
        compared = 0
        for mine, theirs in zip(answers, job.answers):
            if not isinstance(mine, dict):
                stats.failed += 1
                self.metrics.shadow.labels(name, "failed").inc()
                continue
            diff = abs(mine["score"] - theirs["score"])
            stats.items += 1
            compared += 1
            stats.abs_diff_sum += diff
            self.metrics.shadow_abs_diff.labels(name).observe(diff)
            if mine["polarity"] == theirs["polarity"]:
                stats.agree += 1
            else:
                self.metrics.shadow_disagreements.labels(name).inc()
            live_pos, shadow_pos = theirs["polarity"] == "positive", mine["polarity"] == "positive"
            stats.live_only_positive += live_pos and not shadow_pos
            stats.shadow_only_positive += shadow_pos and not live_pos
        if compared:
            stats.compared_requests += 1
            self.metrics.shadow.labels(name, "compared").inc()
