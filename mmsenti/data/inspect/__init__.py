"""``mmsenti data inspect``: what is in a data set, before anything trains on it.

Accepted inputs (detected by suffix, else by the file's first bytes):

* a folder of CMU-MOSI computational sequences (``CMU_MOSI_Opinion_Labels.csd`` + words/COVAREP/
  FACET, real or synthetic) - loaded with :func:`~mmsenti.data.mosi.load_mosi_csd`
  (``on_error="skip"`` so malformed entries are counted, no cache written); a CMU-MOSEI folder
  (``CMU_MOSEI_Labels.csd`` + the SDK's feature names) likewise, with
  :func:`~mmsenti.data.mosei.load_mosei_csd` (its standard folds, sentiment at label index 0);
* a single ``.csd`` file: a label file (one numeric column) is loaded alone, with its folder's
  ``folds.json`` or the SDK's standard folds; a words or frame-feature file is summarised per
  video (rows, durations, per-dimension statistics, NaN/inf, fold coverage);
* an MMSA processed pickle (``aligned_50.pkl`` / ``unaligned_50.pkl``), read with the restricted
  unpickler of :mod:`mmsenti.data.mmsa`;
* an MMSA-FET ``label.csv`` (text only).

:func:`.stats.inspect_path` returns one JSON-ready dict (:func:`.stats.to_jsonable` for ``--json``);
:func:`.render.render_text` prints it as tables; :func:`.plot.plot_labels` draws the label histogram
of every split (matplotlib, Agg backend). Nothing is ever written next to the data: the figure goes
only where ``--plot`` says. The views read only that dict, never the data, so the statistics
are computed once, in one place, whichever view (or ``--json``) shows them.
"""
