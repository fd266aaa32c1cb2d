"""Prometheus metrics of the server (``GET /metrics``, text exposition format).

One :class:`ServeMetrics` per app, on its own registry (two apps in one process — tests, an
embedding program — never share or clash). Per model (label ``model``):

* ``mmsenti_request_seconds`` — histogram, a ``/v1/predict`` request from body read to response;
* ``mmsenti_queue_wait_seconds`` — histogram, an item from enqueue to the start of its engine call;
* ``mmsenti_batch_size`` — histogram, items per engine call;
* ``mmsenti_engine_seconds`` — histogram, one engine call (tokenise + run);
* ``mmsenti_items_total`` — counter, items scored;
* ``mmsenti_queue_items`` — gauge, items waiting now;
* ``mmsenti_model_info`` — gauge = 1 for each loaded model, with its ``version``;
* ``mmsenti_model_loads_total`` — counter by ``outcome`` (``ok`` | ``failed``).

And ``mmsenti_errors_total{model, reason}`` for every refused or failed request (``reason``:
``bad_json``, ``content_type``, ``too_large``, ``validation``, ``unknown_model``, ``queue_full``,
``draining``, ``engine``, ``internal``).

Answers, per model (so per A/B variant; :mod:`mmsenti.serve.answers`, :mod:`mmsenti.serve.experiments`):

* ``mmsenti_answers_total{model, mode, path, cached}`` — every answered item: the hybrid mode, the
  path that answered (``model`` | ``lexicon`` | ``blend``) and the cache layer (``exact`` | ``near``
  | ``none``);
* ``mmsenti_score`` — histogram of answered scores; ``mmsenti_polarity_total{model, polarity}``;
* ``mmsenti_traffic_weight{model}`` — gauge, the A/B split (1 for the active model without one);
* ``mmsenti_shadow_total{model, outcome}`` — shadow requests of the candidate ``model``:
  ``compared`` | ``dropped_queue`` (the bounded shadow queue was full) | ``dropped_load`` (the
  primary had a backlog: shadow work goes first) | ``dropped_incompatible`` (frames the candidate
  does not take) | ``failed``; ``mmsenti_shadow_abs_diff`` —
  histogram of |candidate − primary| per item; ``mmsenti_shadow_disagreements_total`` — items whose
  polarity differs; ``mmsenti_shadow_queue_items`` — gauge.

The cache, per layer (label ``layer``: ``exact`` the in-process LRU, ``redis``, ``near``), copied
from the cache objects' own counters (:meth:`ServeMetrics.sync_cache`, at each scrape and, with
``--workers``, after each request): ``mmsenti_cache_hits_total``, ``mmsenti_cache_misses_total``,
``mmsenti_cache_evictions_total``, ``mmsenti_cache_expired_total``, ``mmsenti_cache_errors_total``
(Redis unreachable), ``mmsenti_cache_guard_rejects_total`` (near candidates the negation guard
refused), gauges ``mmsenti_cache_entries`` and ``mmsenti_cache_bytes``.

With ``--workers N`` each process writes its samples to ``PROMETHEUS_MULTIPROC_DIR`` (set by
``mmsenti serve``) and ``/metrics`` sums them over the processes (prometheus_client's multiprocess
mode), so one scrape sees the whole server whichever worker answers it.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# seconds: sub-millisecond engine calls up to overload queueing
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.075, 0.1,
                   0.15, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128)
# sentiment scores: MOSI's [-3, 3] and classification logits
SCORE_BUCKETS = (-5.0, -3.0, -2.0, -1.5, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0)
DIFF_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
CACHE_COUNTERS = ("hits", "misses", "evictions", "expired", "errors", "guard_rejects")
SHADOW_OUTCOMES = ("compared", "dropped_queue", "dropped_load", "dropped_incompatible", "failed")
ERROR_REASONS = ("bad_json", "content_type", "too_large", "validation", "unknown_model", "queue_full", "draining",
                 "engine", "internal")

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServeMetrics:
    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_seconds = Histogram("mmsenti_request_seconds", "a /v1/predict request, body read to response",
                                         ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait_seconds = Histogram("mmsenti_queue_wait_seconds", "an item from enqueue to its engine call",
                                            ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("mmsenti_batch_size", "items per engine call", ["model"], buckets=BATCH_BUCKETS,
                                    registry=r)
        self.engine_seconds = Histogram("mmsenti_engine_seconds", "one engine call (tokenise + run)", ["model"],
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.items = Counter("mmsenti_items", "items scored", ["model"], registry=r)
        self.errors = Counter("mmsenti_errors", "refused or failed requests, by reason", ["model", "reason"], registry=r)
        gauge_mode = {"multiprocess_mode": "livesum"} if self.multiprocess else {}
        self.queue_items = Gauge("mmsenti_queue_items", "items waiting for the engine", ["model"], registry=r, **gauge_mode)
        self.model_info = Gauge("mmsenti_model_info", "1 for each loaded model version", ["model", "version"],
                                registry=r, **({"multiprocess_mode": "livemax"} if self.multiprocess else {}))
        self.model_loads = Counter("mmsenti_model_loads", "model loads, by outcome", ["model", "outcome"], registry=r)
        # answers (per model = per A/B variant)
        self.answers = Counter("mmsenti_answers", "answered items, by hybrid mode, answering path and cache layer",
                               ["model", "mode", "path", "cached"], registry=r)
        self.score = Histogram("mmsenti_score", "answered scores", ["model"], buckets=SCORE_BUCKETS, registry=r)
        self.polarity = Counter("mmsenti_polarity", "answered items, by polarity", ["model", "polarity"], registry=r)
        self.traffic_weight = Gauge("mmsenti_traffic_weight", "share of routed traffic (the A/B split)", ["model"],
                                    registry=r, **({"multiprocess_mode": "livemax"} if self.multiprocess else {}))
        self.shadow = Counter("mmsenti_shadow", "shadow requests of a candidate, by outcome", ["model", "outcome"], registry=r)
        self.shadow_abs_diff = Histogram("mmsenti_shadow_abs_diff", "|candidate - primary| score per shadowed item",
                                         ["model"], buckets=DIFF_BUCKETS, registry=r)
        self.shadow_disagreements = Counter("mmsenti_shadow_disagreements", "shadowed items whose polarity differs",
                                            ["model"], registry=r)
        self.shadow_queue = Gauge("mmsenti_shadow_queue_items", "shadow requests waiting", registry=r, **gauge_mode)
        # the answer cache, per layer, from the cache objects' counters
        self.cache_counters = {name: Counter(f"mmsenti_cache_{name}", f"answer-cache {name.replace('_', ' ')}, by layer",
                                             ["layer"], registry=r) for name in CACHE_COUNTERS}
        self.cache_entries = Gauge("mmsenti_cache_entries", "answer-cache entries, by layer", ["layer"], registry=r,
                                   **gauge_mode)
        self.cache_bytes = Gauge("mmsenti_cache_bytes", "answer-cache payload bytes, by layer", ["layer"], registry=r,
                                 **gauge_mode)
        self._cache_seen: dict[tuple[str, str], int] = {}
        self.cache_source = None  # a callable returning {layer: stats dict}, set by the app when a cache is on

    def sync_cache(self) -> None:
        """Copy the cache objects' counters into the Prometheus counters (adds what changed since the last sync)."""
        if self.cache_source is None:
            return
        for layer, stats in self.cache_source().items():
            for name, counter in self.cache_counters.items():
                if name not in stats:
                    continue
                seen = self._cache_seen.get((layer, name), 0)
                if stats[name] > seen:
                    counter.labels(layer).inc(stats[name] - seen)
                    self._cache_seen[(layer, name)] = stats[name]
            if "entries" in stats:
                self.cache_entries.labels(layer).set(stats["entries"])
                self.cache_bytes.labels(layer).set(stats.get("bytes", 0))

    def error(self, model: str | None, reason: str) -> None:
        self.errors.labels(model or "", reason).inc()

    def render(self) -> bytes:
        self.sync_cache()
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


class ModelMetrics:
    """The label children of one model, looked up once (``.labels()`` on every request costs a dict + lock)."""

    def __init__(self, metrics: ServeMetrics, model: str):
        self.request_seconds = metrics.request_seconds.labels(model)
        self.queue_wait_seconds = metrics.queue_wait_seconds.labels(model)
        self.batch_size = metrics.batch_size.labels(model)
        self.engine_seconds = metrics.engine_seconds.labels(model)
        self.items = metrics.items.labels(model)
        self.queue_items = metrics.queue_items.labels(model)
        self.score = metrics.score.labels(model)
        self.polarity = {p: metrics.polarity.labels(model, p) for p in ("positive", "negative", "neutral")}
        self._answers = metrics.answers
        self._answer_children: dict[tuple[str, str, str], Any] = {}
        self.name = model

    def answered(self, mode: str, path: str, cached: str | None, score: float, polarity: str) -> None:
        key = (mode, path, cached or "none")
        child = self._answer_children.get(key)
        if child is None:
            child = self._answer_children[key] = self._answers.labels(self.name, *key)
        child.inc()
        self.score.observe(score)
        self.polarity[polarity].inc()
