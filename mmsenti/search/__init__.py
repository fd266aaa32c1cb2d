"""Latency-aware search: a multi-objective Optuna study over architecture knobs (``hparams_search=mosi_nas``).

* :mod:`mmsenti.search.space` — the search space declared in the config (``search.space``), with
  conditional knobs, handed to the Hydra Optuna sweeper as its ``custom_search_space``;
* :mod:`mmsenti.search.study` — a stored study read back: each trial's run folder, the Pareto front
  (JSON + plot), the comparison with a reference run, a side-by-side re-measurement, export by trial;
* :mod:`mmsenti.search.commands` — ``mmsenti search trials | front | export``.

A trial is an ordinary ``train.py`` run: it trains, exports its best checkpoint (``export=onnx``),
times the engine (``export.benchmark``) and returns ``optimized_metric`` (a list of names: one value per
objective). See ``docs/search.md``.
"""
