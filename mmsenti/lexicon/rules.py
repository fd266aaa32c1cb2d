"""Negation and intensifier rules over lexicon hits: a sentence's lexicon score, and the near-cache guard terms.

:class:`Scorer` reads the tokens of :mod:`mmsenti.lexicon.tokenize` left to right and matches the
longest lexicon term at each position (multi-word terms first; among lexicons, the one listed first
wins, so a domain lexicon overrides VADER on a shared term). Each hit's valence ``v`` (VADER scale,
-4..4) is then adjusted by the (up to) three tokens before it, VADER's window, cut short at the
previous hit (a negator or intensifier acts on the next sentiment term only: in "don't like it :("
the ``:(`` stays negative, where VADER would flip it too):

* each **intensifier** there adds its scalar in the direction of ``v``: ``v += sign(v) * b``
  (``very``/``很``/``非常`` b = +0.293, VADER's ``B_INCR``; ``slightly``/``有点``/``略`` b = -0.293);
* each **negator** there multiplies ``v`` by VADER's ``N_SCALAR`` = -0.74 (``not good`` =
  1.9 × -0.74 = -1.406), after the intensifiers (``not very good`` = (1.9 + 0.293) × -0.74).
  Chinese negation written inside a word is split out by the tokenizer (``不好`` → ``不`` ``好``);
* a **contrast** word (``but``, ``however``, ``但是``, ``可是``, ``不过``, ``然而``) halves the hits before
  the last one and multiplies those after it by 1.5 (VADER's ``but`` rule).

The sentence's ``total`` is the sum of the adjusted valences and its ``compound`` VADER's
normalisation ``total / sqrt(total² + 15)`` in (-1, 1). Not modelled (kept simple, and so
hand-computable): VADER's capitals and ``!`` emphasis, idioms and ``least``/``never so`` cases.

English negators are VADER's ``NEGATE`` list (read from the installed package) plus ``no``,
``n't``, ``nobody``, ``noone``, ``hardly``, ``barely``, ``scarcely`` (VADER treats the last three
as dampeners; "hardly good" is not good); any token ending in ``n't`` negates. Negators,
intensifiers and contrast words are never lexicon hits themselves (VADER's ``no`` -1.2 is not
counted), as in VADER. English intensifiers are VADER's ``BOOSTER_DICT`` (single words). Chinese
lists below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mmsenti.errors import MmsentiError
from mmsenti.lexicon.lexicon import Entry, Lexicon, resolve_lexicon, term_key
from mmsenti.lexicon.tokenize import Tokenizer, is_cjk

WINDOW = 3  # tokens before a hit that a negator/intensifier reaches (VADER's)
ALPHA = 15.0  # VADER's compound normalisation constant
B_INCR, B_DECR, N_SCALAR = 0.293, -0.293, -0.74  # VADER's constants (same values as vaderSentiment's)
CONTRAST_BEFORE, CONTRAST_AFTER = 0.5, 1.5

NEGATORS_ZH = frozenset({
    "不", "没", "没有", "无", "非", "未", "别", "莫", "勿", "毋", "甭", "不是", "并非", "绝非", "并不", "从不",
    "从未", "决不", "绝不", "毫无", "不会", "不要", "不能", "不必", "未能", "未曾", "无法", "难以", "不够", "未必",
    "不再", "别再", "没能", "不曾", "不太", "并没有", "并未", "从没",
})
# negating characters: the near-cache guard keeps every Chinese word holding one
NEGATION_CHARS_ZH = frozenset("不没无非未别莫勿毋甭")
INTENSIFIERS_ZH = {
    **dict.fromkeys(("很", "非常", "特别", "十分", "极其", "极", "太", "最", "超", "超级", "相当", "格外", "尤其", "挺",
                     "真", "真的", "更", "更加", "越来越", "大幅", "明显", "严重", "极度", "异常", "无比", "如此", "这么",
                     "那么", "深度", "强烈", "完全", "彻底", "实在"), B_INCR),
    **dict.fromkeys(("有点", "有些", "稍微", "稍", "略", "略微", "比较", "还算", "些许", "轻微", "小幅"), B_DECR),
}
CONTRAST_EN = frozenset({"but", "however"})
CONTRAST_ZH = frozenset({"但是", "但", "可是", "不过", "然而"})
EXTRA_NEGATORS_EN = frozenset({"no", "n't", "nobody", "noone", "hardly", "barely", "scarcely", "neither", "nor"})


def _vader_rules() -> tuple[frozenset[str], dict[str, float]]:
    try:
        from vaderSentiment.vaderSentiment import BOOSTER_DICT, NEGATE
    except ImportError as err:
        raise MmsentiError("the English negation/intensifier rules come from vaderSentiment: pip install 'mmsenti[serve]'") from err
    negators = frozenset(NEGATE) | EXTRA_NEGATORS_EN
    boosters = {w: float(b) for w, b in BOOSTER_DICT.items() if " " not in w and w not in negators}
    return negators, boosters


@dataclass(frozen=True)
class Hit:
    term: str
    lexicon: str  # the lexicon's name@version
    valence: float  # the lexicon's score
    adjusted: float  # after intensifiers, negation and the contrast rule
    strong: bool
    negated: bool
    position: int  # token index


@dataclass(frozen=True)
class LexiconScore:
    hits: tuple[Hit, ...]
    total: float
    compound: float
    tokens: tuple[str, ...]

    @property
    def strong_hits(self) -> tuple[Hit, ...]:
        return tuple(h for h in self.hits if h.strong)

    @property
    def strong_sign(self) -> int:
        """+1 / -1 when every strong hit (after negation) points one way, 0 when none or they disagree."""
        signs = {math.copysign(1, h.adjusted) for h in self.strong_hits if h.adjusted != 0}
        return int(signs.pop()) if len(signs) == 1 else 0

    @property
    def negated(self) -> bool:
        return any(h.negated for h in self.hits)


class Scorer:
    """Lexicons + the negation/intensifier rules (see the module docstring).

    ``lexicons``: :class:`Lexicon` objects, shipped names (``vader``, ``finance_en``, ...) or file
    paths; on a term two of them share, the one listed first wins.
    """

    def __init__(self, lexicons: Sequence[Lexicon | str]):
        if not lexicons:
            raise MmsentiError("a lexicon scorer needs at least one lexicon (e.g. 'vader', 'finance_en')")
        self.lexicons = [resolve_lexicon(x) for x in lexicons]
        self.negators, boosters = _vader_rules()
        self.negators = self.negators | NEGATORS_ZH
        self.intensifiers = {**boosters, **INTENSIFIERS_ZH}
        self.contrast = CONTRAST_EN | CONTRAST_ZH
        cjk_words = set(NEGATORS_ZH) | set(INTENSIFIERS_ZH) | CONTRAST_ZH
        terms: dict[tuple[str, ...], tuple[Entry, str]] = {}
        for lex in self.lexicons:
            cjk_words.update(k for k in lex.entries if is_cjk(k) and " " not in k)
        self.tokenizer = Tokenizer(cjk_words)
        for lex in self.lexicons:
            for key, entry in lex.entries.items():
                tokens = (key,) if is_cjk(key) and " " not in key and key.isalpha() else tuple(self.tokenizer.tokens(key))
                if tokens and tokens not in terms:
                    terms[tokens] = (entry, lex.id)
        self.terms = terms
        self._longest: dict[str, int] = {}  # first token -> longest term starting with it
        for tokens in terms:
            self._longest[tokens[0]] = max(self._longest.get(tokens[0], 0), len(tokens))

    @property
    def id(self) -> str:
        """The lexicons' ``name@version`` list: cache keys of answers the lexicons helped make carry it."""
        return "+".join(lex.id for lex in self.lexicons)

    def tokens(self, text: str | None) -> list[str]:
        return self.tokenizer.tokens(text)

    def is_negator(self, token: str) -> bool:
        return token in self.negators or token.endswith("n't")

    def _match(self, tokens: Sequence[str], i: int) -> tuple[int, Entry, str] | None:
        longest = self._longest.get(tokens[i], 0)
        for n in range(min(longest, len(tokens) - i), 0, -1):
            found = self.terms.get(tuple(tokens[i:i + n]))
            if found is not None:
                return n, found[0], found[1]
        return None

    def score(self, text: str | None) -> LexiconScore:
        """The lexicon score of ``text`` (rules in the module docstring)."""
        tokens = self.tokens(text)
        raw: list[list] = []  # [term, lexicon, valence, adjusted, strong, negated, position]
        contrast_at = -1
        i = last_end = 0
        while i < len(tokens):
            tok = tokens[i]
            if tok in self.contrast:
                contrast_at = i
            if self.is_negator(tok) or tok in self.intensifiers or tok in self.contrast:
                i += 1
                continue
            found = self._match(tokens, i)
            if found is None:
                i += 1
                continue
            n, entry, lex_id = found
            v = entry.score
            window = tokens[max(0, i - WINDOW, last_end):i]
            if v != 0:  # intensifiers first, in the term's own direction; then each negator flips and damps
                v += sum(self.intensifiers.get(t, 0.0) for t in window) * math.copysign(1.0, v)
            negations = sum(1 for t in window if self.is_negator(t))
            v *= N_SCALAR ** negations
            negated = negations % 2 == 1
            raw.append([entry.term, lex_id, entry.score, v, entry.strong, negated, i])
            i = last_end = i + n
        if contrast_at >= 0:
            for h in raw:
                h[3] *= CONTRAST_BEFORE if h[6] < contrast_at else CONTRAST_AFTER
        hits = tuple(Hit(term=t, lexicon=lx, valence=v0, adjusted=round(v, 6), strong=s, negated=ng, position=p)
                     for t, lx, v0, v, s, ng, p in raw)
        total = round(sum(h.adjusted for h in hits), 6)
        compound = total / math.sqrt(total * total + ALPHA)
        return LexiconScore(hits=hits, total=total, compound=compound, tokens=tuple(tokens))

    def guard_terms(self, text: str | None, emoji: bool = False) -> tuple[str, ...]:
        """The sentiment-bearing tokens of ``text`` in order: what two sentences must share for a near-cache hit.

        Negators, intensifiers, contrast words, lexicon terms (any lexicon of this scorer), numbers
        and every Chinese word holding a negating character — Chinese negates inside words
        (``算不上`` "hardly counts as", ``看不懂``), and ``不断`` or ``差不多`` kept too is cheap caution. ``emoji=True`` adds each emoji as a term (for a model whose vocabulary tells them apart).
        """
        tokens = self.tokens(text)
        out: list[str] = []
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            if (self.is_negator(tok) or tok in self.intensifiers or tok in self.contrast or tok.isdigit()
                    or not NEGATION_CHARS_ZH.isdisjoint(tok)):
                out.append(tok)
                i += 1
                continue
            found = self._match(tokens, i)
            if found is not None:
                out.append(term_key(found[1].term))
                i += found[0]
                continue
            i += 1
        if emoji:
            out.extend(_emoji(text or ""))
        return tuple(out)


def _emoji(text: str) -> list[str]:
    import unicodedata

    return [ch for ch in text if unicodedata.category(ch) == "So"]
