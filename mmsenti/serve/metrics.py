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

With ``--workers N`` each process writes its samples to ``PROMETHEUS_MULTIPROC_DIR`` (set by
``mmsenti serve``) and ``/metrics`` sums them over the processes (prometheus_client's multiprocess
mode), so one scrape sees the whole server whichever worker answers it.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# seconds: sub-millisecond engine calls up to overload queueing
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.075, 0.1,
                   0.15, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128)
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

    def error(self, model: str | None, reason: str) -> None:
        self.errors.labels(model or "", reason).inc()

    def render(self) -> bytes:
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
