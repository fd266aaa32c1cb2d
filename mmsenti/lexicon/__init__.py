"""Sentiment lexicons and their rules, for serving: the lexicon + model hybrid and the near-cache guard.

* :mod:`~mmsenti.lexicon.lexicon` — versioned lexicon files (``term<TAB>score[<TAB>flags]``), the
  shipped domain lexicons (``data/``: finance English and Chinese, general Chinese) and VADER's
  general English lexicon read from the ``vaderSentiment`` package;
* :mod:`~mmsenti.lexicon.tokenize` — English + Chinese tokens (jieba for Chinese word segmentation);
* :mod:`~mmsenti.lexicon.rules` — negation and intensifier rules, a sentence's lexicon score
  (:class:`~mmsenti.lexicon.rules.Scorer`), the guard terms the near-duplicate cache compares;
* :mod:`~mmsenti.lexicon.hybrid` — the ``model`` / ``lexicon`` / ``override`` / ``blend`` modes.

Torch-free and model-free: it knows scores, not engines (the server passes the model's score in).
Needs the ``serve`` extra (``vaderSentiment``, ``jieba``).
"""
