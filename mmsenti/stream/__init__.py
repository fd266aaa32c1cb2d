"""Real-time sentiment over Kafka with Apache Flink (``mmsenti stream``; docs/streaming.md).

Reading order, bottom up — the pure-Python rules first, the engine last:

* :mod:`~mmsenti.stream.events` — the comment event on the wire and the one rule that admits it;
* :mod:`~mmsenti.stream.windows` — window assignment, watermark/lateness, the window record and
  the reversal-alert rule (shared by the job and the batch recomputation);
* :mod:`~mmsenti.stream.scoring` — the runtime :class:`~mmsenti.runtime.Predictor`, hot-swapped from
  a watched model repository, and the per-batch scoring step of the job's vectorised UDF;
* :mod:`~mmsenti.stream.clients` — Kafka connection/security settings for both client stacks, topic helpers;
* :mod:`~mmsenti.stream.broker` — a local Kafka-protocol broker for development and tests;
* :mod:`~mmsenti.stream.produce` / :mod:`~mmsenti.stream.consume` — event producer, topic reader;
* :mod:`~mmsenti.stream.batch` — the batch recomputation and the per-window comparison;
* :mod:`~mmsenti.stream.job` — the PyFlink job (Table API/SQL + a DataStream tail);
* :mod:`~mmsenti.stream.commands` — the ``mmsenti stream`` command line.

Layering: above :mod:`mmsenti.runtime` (and :mod:`mmsenti.data` for the SST-2 reader); nothing here
imports torch, and PyFlink / confluent-kafka are imported only where they are used.
"""
