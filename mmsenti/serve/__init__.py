"""``mmsenti serve``: online scoring over HTTP, on top of the one runtime Predictor.

* :mod:`~mmsenti.serve.config` — settings and request limits (pydantic);
* :mod:`~mmsenti.serve.batcher` — the asyncio micro-batcher (one engine worker thread per model,
  bounded queue);
* :mod:`~mmsenti.serve.models` — served models: load, verify, warm, hot swap, unload, repository watch;
* :mod:`~mmsenti.serve.answers` — the answer path: the answer cache, the lexicon + model hybrid, the batcher;
* :mod:`~mmsenti.serve.experiments` — the A/B split, shadow traffic, per-variant statistics and tests;
* :mod:`~mmsenti.serve.metrics` — Prometheus metrics;
* :mod:`~mmsenti.serve.app` — the FastAPI app (routes, validation, error bodies);
* :mod:`~mmsenti.serve.replay` — an open-loop replayer of traffic files (``mmsenti serve replay``);
* :mod:`~mmsenti.serve.commands` — the ``mmsenti serve`` command (and ``serve replay`` / ``serve traffic``).

Layering: above :mod:`mmsenti.runtime` (it scores through
:class:`~mmsenti.runtime.predictor.Predictor`, nothing else), :mod:`mmsenti.cache`,
:mod:`mmsenti.lexicon` and :mod:`mmsenti.text`; torch-free,
and nothing below imports it. Needs the ``serve`` extra (``pip install -e '.[serve]'``).
See ``mmsenti/serve/README.md`` for running it behind a load balancer and on Kubernetes.
"""
