"""Tokenisation for the lexicon rules and the near-duplicate cache's guard: English and Chinese in one pass.

:meth:`Tokenizer.tokens` turns a sentence into the tokens the rules read (``mmsenti.lexicon.rules``):

* Unicode NFKC first (full-width ``ＧＯＯＤ`` / ``！`` become ``GOOD`` / ``!``), curly apostrophes become ``'``,
  white space between two CJK ideographs is dropped (it separates nothing in Chinese);
* **English** (any non-CJK letters/digits): words lower-cased, inner apostrophes and hyphens kept
  (``don't``, ``so-so``); SST-2's detached ``n't`` (``does n't``) is a token of its own; ASCII
  emoticons (``:)``, ``:-(``, ``<3``) are tokens, case kept (VADER scores them, ``:D`` ≠ ``:d``);
  other punctuation and emoji are dropped (see :mod:`mmsenti.cache.near` for why emoji carry no
  sentiment here);
* **Chinese** (runs of CJK ideographs, no spaces): the tokenizer's own vocabulary (lexicon terms,
  negators, intensifiers) comes first, then ``jieba`` (its bundled dictionary, ``HMM=False`` so only
  dictionary words come out) for the rest:

  - *protect*: multi-character vocabulary words are found by forward maximum match and kept whole
    (jieba alone reads ``A股利好`` as ``股利`` "dividend" + ``好``; the lexicon's ``利好`` wins here);
  - *segment*: jieba cuts the text between them;
  - *split*: a jieba word that is not a vocabulary word but is covered entirely by vocabulary
    words and sentence particles (``了``, ``的``, ``吧``...) is split into them (``不好`` → ``不`` +
    ``好``, ``太好了`` → ``太`` + ``好`` + ``了``), while a word with another character left over
    stays whole (``不断`` "continuously", ``好像`` "seems", ``没想到`` "unexpectedly" are not
    negations or praise; single-character vocabulary words are never protected for that reason).

The vocabulary is fixed per tokenizer (no global jieba state is changed), so one sentence gets the
same tokens whatever else the process loaded. jieba's dictionary loads once per process (~1-2 s,
~80 MB) the first time Chinese text is seen; English-only text never loads it.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Iterable

from mmsenti.errors import MmsentiError

# CJK Unified Ideographs (+ extension A, compatibility ideographs); NFKC maps the compatibility block
CJK_RANGES = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK = f"[{CJK_RANGES}]"
# ASCII emoticons: eyes, optional nose, mouth (and the reversed form), hearts
EMOTICON = (r"(?:(?<![\w:;=])[:;=8][\-o\*'^]?[\)\]\(\[dDpP/\\|@3Oo\*]+(?![\w)(\]\[])"
            r"|(?<![\w)(\]\[])[\)\]\(\[][\-o\*'^]?[:;=](?![\w:;=])"
            r"|<\/?3)")
_LETTERS = f"[^\\W_{CJK_RANGES}]+"  # word characters except '_' and CJK ideographs
_WORD = rf"{_LETTERS}(?:['\-]{_LETTERS})*"
_TOKEN = re.compile(rf"(?P<cjk>{_CJK}+)|(?P<emo>{EMOTICON})|(?P<neg>(?<![^\W_])n't(?![^\W_]))|(?P<word>{_WORD})")
# white space between two ideographs separates nothing in Chinese ("这 部 电影" is "这部电影")
CJK_GAP = re.compile(rf"(?<={_CJK})\s+(?={_CJK})")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})

# sentence-final and structural particles: allowed leftovers when a jieba word is split into vocabulary words
PARTICLES = frozenset("了的地得啊吧呢吗呀哦啦嘛哈")

_JIEBA = None
_JIEBA_LOCK = threading.Lock()


def is_cjk(text: str) -> bool:
    """True when ``text`` holds at least one CJK ideograph."""
    return re.search(_CJK, text) is not None


def _jieba():
    """The process's one jieba tokenizer (its bundled dictionary), loaded on first use."""
    global _JIEBA
    if _JIEBA is None:
        with _JIEBA_LOCK:
            if _JIEBA is None:
                try:
                    import jieba
                except ImportError as err:
                    raise MmsentiError("Chinese text needs the jieba word segmenter: pip install 'mmsenti[serve]'") from err
                import logging

                jieba.setLogLevel(logging.WARNING)  # it logs "Building prefix dict..." at DEBUG otherwise
                tk = jieba.Tokenizer()
                tk.initialize()
                _JIEBA = tk
    return _JIEBA


class Tokenizer:
    """English + Chinese tokens over a fixed vocabulary of multi-character Chinese words (see the module docstring)."""

    def __init__(self, vocabulary: Iterable[str] = ()):
        self.vocabulary = frozenset(w for w in vocabulary if w and is_cjk(w))
        self.max_word = max((len(w) for w in self.vocabulary), default=1)

    def tokens(self, text: str | None) -> list[str]:
        text = CJK_GAP.sub("", unicodedata.normalize("NFKC", text or "").translate(_APOSTROPHES))
        out: list[str] = []
        for m in _TOKEN.finditer(text):
            kind = m.lastgroup
            if kind == "cjk":
                out.extend(self.segment(m.group()))
            elif kind == "emo":
                out.append(m.group())
            else:
                out.append(m.group().lower())
        return out

    # ------------------------------------------------------------------ Chinese
    def segment(self, run: str) -> list[str]:
        """Words of a run of CJK ideographs: protected vocabulary words, jieba between them, then the split pass."""
        out: list[str] = []
        gap_start = i = 0
        while i < len(run):
            for j in range(min(len(run), i + self.max_word), i + 1, -1):  # longest first, >= 2 characters
                if run[i:j] in self.vocabulary:
                    if gap_start < i:
                        out.extend(self._split(_jieba().lcut(run[gap_start:i], HMM=False)))
                    out.append(run[i:j])
                    gap_start = i = j
                    break
            else:
                i += 1
        if gap_start < len(run):
            out.extend(self._split(_jieba().lcut(run[gap_start:], HMM=False)))
        return out

    def _split(self, pieces: list[str]) -> list[str]:
        out = []
        for piece in pieces:
            if len(piece) > 1 and piece not in self.vocabulary:
                parts = self._cover(piece)
                if parts is not None:
                    out.extend(parts)
                    continue
            out.append(piece)
        return out

    def _cover(self, word: str) -> list[str] | None:
        """``word`` as vocabulary words (+ particles), forward maximum match; None when another character is left over."""
        parts, i = [], 0
        while i < len(word):
            for j in range(min(len(word), i + self.max_word), i, -1):
                if word[i:j] in self.vocabulary:
                    parts.append(word[i:j])
                    i = j
                    break
            else:
                if word[i] not in PARTICLES:
                    return None
                parts.append(word[i])
                i += 1
        return parts if len(parts) > 1 else None
