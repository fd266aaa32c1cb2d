"""Text conventions shared by every layer: the one text normalisation and the one polarity rule.

Lowest layer (no torch, no numpy needed): data, models, runtime, serving and streaming import it.

**Normalisation** is a property of the model: ``SentimentModelConfig.text_normalization`` names
the rule, the data's collator applies it in training/eval, every export records it in its manifest
(``text.normalization``) and the runtime :class:`~mmsenti.runtime.Predictor` applies it before
tokenising, so one sentence gets one score through every entry point. Rules:

* ``none`` — the text as given (white space folded: runs of spaces/tabs/newlines become one space,
  ends stripped). For corpora already written the way users type (SST-2).
* ``transcript`` — the way CMU-MOSI transcripts (and ``mmsenti extract``) write speech: Unicode
  NFKC, lower-cased, split on white space, punctuation stripped from both ends of each token (inner
  apostrophes and hyphens kept: ``don't``, ``so-so``), tokens left empty dropped.
  Idempotent: a MOSI transcript is unchanged by it.

**Polarity**: the sign of the score, MOSI's Non0 convention — ``> 0`` positive, ``< 0`` negative,
exactly ``0`` neutral (``y == 0`` is what Non0 Acc-2 leaves out). For a classification model the
score is the logit of p(positive): the same rule is p > 0.5. Acc-7 classes are
``round(clip(score, -3, 3))``.
"""

from __future__ import annotations

import math
import re
import unicodedata

NORMALIZATIONS = ("none", "transcript")
SENTIMENT_CLASSES = {-3: "strongly negative", -2: "negative", -1: "weakly negative", 0: "neutral",
                     1: "weakly positive", 2: "positive", 3: "strongly positive"}

_EDGE_PUNCT = re.compile(r"^[^\w']+|[^\w']+$", re.UNICODE)
_SPACE = re.compile(r"\s+", re.UNICODE)


def transcript_words(text: str | None) -> list[str]:
    """Words of ``text`` under the ``transcript`` rule (see the module docstring)."""
    out = []
    for raw in unicodedata.normalize("NFKC", text or "").lower().split():
        token = _EDGE_PUNCT.sub("", raw)
        if token:
            out.append(token)
    return out


def check_normalization(rule: str, what: str = "text_normalization") -> str:
    if rule not in NORMALIZATIONS:
        from mmsenti.errors import MmsentiError

        raise MmsentiError(f"{what}={rule!r}; choose one of {', '.join(NORMALIZATIONS)}")
    return rule


def normalize_text(text: str | None, rule: str = "none") -> str:
    """``text`` under the named normalisation rule (``none`` | ``transcript``)."""
    if rule == "none":
        return _SPACE.sub(" ", text or "").strip()
    if rule == "transcript":
        return " ".join(transcript_words(text))
    check_normalization(rule)
    raise AssertionError("unreachable")


def polarity(score: float) -> str:
    """``positive`` | ``negative`` | ``neutral`` (exactly 0) — the one polarity rule."""
    if score > 0:
        return "positive"
    if score < 0:
        return "negative"
    if math.isnan(score):
        raise ValueError("polarity of NaN")
    return "neutral"


def class_7(score: float) -> int:
    """The Acc-7 class ``round(clip(score, -3, 3))`` in -3..3 (round half to even, as numpy)."""
    return int(round(min(3.0, max(-3.0, float(score)))))
