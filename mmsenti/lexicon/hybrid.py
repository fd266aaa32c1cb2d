"""Lexicon + model hybrid: the four combination modes, and which path answered.

Modes (per request or per server):

* ``model`` (default) — the model's score; the lexicon is not consulted.
* ``lexicon`` — the lexicon's score alone (no lexicon term: 0, neutral); the model is never called.
* ``override`` — the QPS lever: when the sentence has a **strong** domain term (flag ``strong``)
  and every strong hit, after negation, points the same way as the sentence's lexicon total, the
  lexicon answers and the model is skipped ("不是利空" → positive, "analysts downgraded" →
  negative); otherwise the model answers. With ``confident=c`` the lexicon also answers sentences
  without a strong term whose ``|compound| >= c`` and that hold no negation (a general-lexicon
  short cut, off by default: VADER alone is far less accurate than a trained model).
* ``blend`` — ``w * lexicon + (1 - w) * model`` (``w = blend_weight``) when the sentence has a
  lexicon term; the model alone (path ``model``) when it has none, so a sentence the lexicon knows
  nothing about is not pulled toward neutral.

``path`` says which answered: ``model`` | ``lexicon`` | ``blend``.

**Scale.** Scores come out on the model's scale. The lexicon's VADER compound ``c`` in (-1, 1)
becomes ``3c`` for a regression model (MOSI's [-3, 3]: a lone "good", c = 0.44, is 1.32, weakly
positive), and ``log((1 + c) / (1 - c)) = 2·atanh(c)`` for a classification model, whose score is
the logit of p(positive): the compound read as a probability ``p = (1 + c) / 2`` (a lone "good"
gives p = 0.72, logit 0.95). Either way the sign, and so :func:`mmsenti.text.polarity`, is the
compound's.

For a batching server, :func:`plan` decides without calling the model and says whether the model
is needed; :meth:`Plan.finish` completes it with the model's score. :func:`decide` is both in one
call, with a ``model_score_fn(text) -> float``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from mmsenti.errors import MmsentiError
from mmsenti.lexicon.rules import LexiconScore, Scorer

MODES = ("model", "lexicon", "override", "blend")
TASKS = ("regression", "classification")
PATHS = ("model", "lexicon", "blend")
REGRESSION_RANGE = 3.0
_MAX_COMPOUND = 1.0 - 1e-6


class Decision(NamedTuple):
    score: float
    path: str  # "model" | "lexicon" | "blend"


def lexicon_to_model_scale(compound: float, task: str = "regression") -> float:
    """The lexicon's compound on the model's scale (see the module docstring)."""
    if task == "regression":
        return REGRESSION_RANGE * compound
    if task == "classification":
        c = max(-_MAX_COMPOUND, min(_MAX_COMPOUND, compound))
        return math.log((1.0 + c) / (1.0 - c))
    raise MmsentiError(f"task={task!r}; choose one of {', '.join(TASKS)}")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise MmsentiError(f"mode={mode!r}; choose one of {', '.join(MODES)}")
    return mode


@dataclass(frozen=True)
class Plan:
    """What :func:`plan` decided: a finished :class:`Decision`, or the model still to call."""

    mode: str
    lexicon: LexiconScore | None
    lexicon_score: float | None  # on the model's scale; None when the lexicon was not consulted
    decision: Decision | None  # set when no model call is needed
    blend_weight: float = 0.0

    @property
    def needs_model(self) -> bool:
        return self.decision is None

    def finish(self, model_score: float | None = None) -> Decision:
        """The decision, given the model's score when :attr:`needs_model`."""
        if self.decision is not None:
            return self.decision
        if model_score is None:
            raise MmsentiError(f"mode {self.mode}: this sentence needs the model's score")
        model_score = float(model_score)
        if self.mode == "blend" and self.lexicon is not None and self.lexicon.hits:
            w = self.blend_weight
            return Decision(w * self.lexicon_score + (1.0 - w) * model_score, "blend")
        return Decision(model_score, "model")


def plan(text: str, mode: str = "model", scorer: Scorer | None = None, task: str = "regression",
         blend_weight: float = 0.5, confident: float | None = None) -> Plan:
    """Decide ``text`` as far as the lexicon can, without the model (rules in the module docstring)."""
    check_mode(mode)
    if task not in TASKS:
        raise MmsentiError(f"task={task!r}; choose one of {', '.join(TASKS)}")
    if mode == "model":
        return Plan(mode, None, None, None)
    if scorer is None:
        raise MmsentiError(f"mode {mode} needs a lexicon; load one (e.g. Scorer(['finance_en', 'vader']))")
    if not 0.0 <= blend_weight <= 1.0:
        raise MmsentiError(f"blend_weight={blend_weight}; choose a weight in [0, 1]")
    lex = scorer.score(text)
    lex_score = lexicon_to_model_scale(lex.compound, task)
    if mode == "lexicon":
        return Plan(mode, lex, lex_score, Decision(lex_score, "lexicon"))
    if mode == "override":
        sign = lex.strong_sign
        if sign and math.copysign(1, lex.total) == sign and lex.total != 0:
            return Plan(mode, lex, lex_score, Decision(lex_score, "lexicon"))
        if (confident is not None and not lex.strong_hits and lex.hits and not lex.negated
                and abs(lex.compound) >= confident):
            return Plan(mode, lex, lex_score, Decision(lex_score, "lexicon"))
        return Plan(mode, lex, lex_score, None)
    return Plan(mode, lex, lex_score, None, blend_weight=blend_weight)  # blend


def decide(text: str, mode: str, scorer: Scorer | None, model_score_fn: Callable[[str], float],
           task: str = "regression", blend_weight: float = 0.5, confident: float | None = None) -> Decision:
    """``(score, path)`` for ``text``; ``model_score_fn`` is called only when the mode needs the model."""
    p = plan(text, mode, scorer, task, blend_weight, confident)
    return p.finish(model_score_fn(text) if p.needs_model else None)


def variant_id(mode: str = "model", scorer: Scorer | None = None, blend_weight: float = 0.5,
               confident: float | None = None) -> str:
    """What, beside the model, makes an answer: the cache namespace's variant (``model``, ``override:finance_en@1+vader@3.3.2``...)."""
    check_mode(mode)
    if mode == "model":
        return "model"
    lexicons = scorer.id if scorer is not None else "none"
    extra = {"blend": f"w={blend_weight:g}", "override": f"c={confident:g}" if confident is not None else ""}.get(mode, "")
    return f"{mode}{'(' + extra + ')' if extra else ''}:{lexicons}"
