"""The near-duplicate layer: MinHash LSH over character n-grams, with a negation/lexicon guard.

A near hit serves the answer of a *different* sentence, so two things must both hold:

1. **Similar surface.** Both texts are reduced to a *near text* — the model's normalisation, NFKC,
   case-folded, every character that is not a letter, digit, CJK ideograph or apostrophe turned
   into a space (punctuation, emoji, symbols), white space folded (and dropped between two CJK
   ideographs, where it separates nothing) — and compared by the Jaccard
   similarity of their character n-gram sets (``n = 3``; shorter texts are one n-gram). A hit
   needs ``jaccard >= threshold`` (default 0.8), computed exactly on the stored n-gram sets.
   Candidates come from MinHash LSH (32 crc32-based hashes, so the index is the same in every
   process, cut into ``bands × rows``; :func:`lsh_rows` picks the most rows that still find a pair
   at the threshold 95% of the time): at the default 0.8, 8 bands × 4 rows find a pair at Jaccard
   0.8 with probability 0.985, at 0.9 0.9998, at 0.2 only 0.013 — so the exact check runs on a
   handful of candidates.
2. **Same sentiment-bearing words, in the same order.** :meth:`mmsenti.lexicon.rules.Scorer.guard_terms`:
   negators (``not``, ``never``, ``no``, ``n't``, ``hardly``…; ``不``, ``没``, ``别``, ``未``, ``无``,
   ``非``… and every Chinese word holding one), intensifiers, contrast words, lexicon terms
   and numbers. "The battery is good" / "the battery is not good" are at Jaccard ~0.8, far above
   what a threshold can separate (embedding caches put "X" and "not X" at cosine 0.83-0.9997);
   the guard tells them apart. A candidate above the threshold that the guard refuses is counted
   (``guard_rejects``), so the guard's work is visible.

**Emoji carry no sentiment here, by decision.** The project's text encoders (MiniLM / MPNet
WordPiece vocabularies) map every emoji to the one ``[UNK]`` token — 😍 and 😡 are the same input
to the model — and the lexicon rules read words and ASCII emoticons, not emoji. So the near layer
ignores emoji (a trailing 👍 is a near hit of the bare sentence, served the model's answer for
it), while the exact layer keeps them (the ``[UNK]`` token does move the model's score a little).
ASCII emoticons (``:)`` / ``:(``) are VADER terms and so guard terms. For a model whose vocabulary
does tell emoji apart, ``emoji_guard=True`` makes every emoji a guard term.

Entries live in an :class:`~mmsenti.cache.lru.LRUCache` (entries/bytes bound, TTL) keyed by the
exact key; the LSH buckets follow its removals. Namespaces (model@version/variant) never mix.
"""

from __future__ import annotations

import re
import threading
import time
import unicodedata
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmsenti.cache.lru import LRUCache, payload_bytes
from mmsenti.errors import MmsentiError
from mmsenti.lexicon.rules import Scorer
from mmsenti.lexicon.tokenize import CJK_GAP
from mmsenti.text import normalize_text

_PRIME = np.uint64((1 << 31) - 1)
_NON_TEXT = re.compile(r"[^\w']+|_+", re.UNICODE)  # \w: letters, digits, CJK ideographs


def near_text(text: str | None, rule: str = "none") -> str:
    """``text`` as the near layer compares it (see the module docstring)."""
    out = unicodedata.normalize("NFKC", normalize_text(text, rule)).casefold().replace("\u2019", "'")
    return CJK_GAP.sub("", " ".join(_NON_TEXT.sub(" ", out).split()))


def shingles(text: str, n: int = 3) -> frozenset[str]:
    """Character n-grams of a near text (one n-gram when the text is shorter than n; none when empty)."""
    if not text:
        return frozenset()
    if len(text) <= n:
        return frozenset((text,))
    return frozenset(text[i:i + n] for i in range(len(text) - n + 1))


def lsh_rows(threshold: float, hashes: int = 32, recall: float = 0.95) -> int:
    """Rows per band: the most (fewest false candidates) that still find a pair at ``threshold`` with ``recall``."""
    for rows in sorted((r for r in range(1, hashes + 1) if hashes % r == 0), reverse=True):
        if 1 - (1 - threshold ** rows) ** (hashes // rows) >= recall:
            return rows
    return 1


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


@dataclass(frozen=True)
class NearEntry:
    namespace: str
    text: str  # the near text
    grams: frozenset[str]
    guard: tuple[str, ...]
    bands: tuple[bytes, ...]
    value: Any


class NearCache:
    """See the module docstring. ``scorer`` supplies the guard terms (its lexicons and rules)."""

    def __init__(self, scorer: Scorer, threshold: float = 0.8, ngram: int = 3, hashes: int = 32, rows: int | None = None,
                 max_entries: int = 20_000, max_bytes: int = 64 << 20, ttl_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic, rule: str = "none", emoji_guard: bool = False,
                 guard: bool = True, seed: int = 1):
        if not 0.0 < threshold <= 1.0:
            raise MmsentiError(f"near-cache threshold={threshold}: choose a Jaccard similarity in (0, 1]")
        rows = lsh_rows(threshold, hashes) if rows is None else rows
        if ngram < 1 or rows < 1 or hashes % rows:
            raise MmsentiError(f"near-cache ngram={ngram}, hashes={hashes}, rows={rows}: need ngram >= 1 and rows dividing hashes")
        bands = hashes // rows
        self.scorer = scorer
        self.threshold = float(threshold)
        self.ngram = int(ngram)
        self.bands, self.rows = int(bands), int(rows)
        self.rule = rule
        self.emoji_guard = emoji_guard
        self.guard = guard  # False only to measure what the guard prevents
        rng = np.random.default_rng(seed)
        k = self.bands * self.rows
        self._a = rng.integers(1, int(_PRIME), size=k, dtype=np.uint64)
        self._b = rng.integers(0, int(_PRIME), size=k, dtype=np.uint64)
        self._buckets: dict[tuple[str, int, bytes], set[str]] = {}
        self._lock = threading.RLock()
        self.store = LRUCache(max_entries=max_entries, max_bytes=max_bytes, ttl_s=ttl_s, clock=clock,
                              sizer=self._entry_bytes, on_remove=self._unindex)
        self.counts = {"hits": 0, "misses": 0, "guard_rejects": 0, "candidates": 0}

    # ------------------------------------------------------------------ signature
    @staticmethod
    def _entry_bytes(entry: NearEntry) -> int:
        """Value + near text + its n-grams + band keys (payload bytes, as the LRU counts them)."""
        return (payload_bytes(entry.value) + len(entry.text.encode("utf-8")) + sum(len(g.encode("utf-8")) for g in entry.grams)
                + sum(len(b) for b in entry.bands))

    def _band_keys(self, grams: frozenset[str]) -> tuple[bytes, ...]:
        """The MinHash signature cut into ``bands`` keys of ``rows`` hashes each."""
        if not grams:
            return ()
        x = np.fromiter((zlib.crc32(g.encode("utf-8")) for g in grams), dtype=np.uint64, count=len(grams))
        sig = ((x[None, :] * self._a[:, None] + self._b[:, None]) % _PRIME).min(axis=1).astype(np.uint32)
        return tuple(sig[i * self.rows:(i + 1) * self.rows].tobytes() for i in range(self.bands))

    def _unindex(self, key: str, entry: NearEntry) -> None:
        for band, h in enumerate(entry.bands):
            bucket = self._buckets.get((entry.namespace, band, h))
            if bucket is not None:
                bucket.discard(key)
                if not bucket:
                    del self._buckets[(entry.namespace, band, h)]

    def _describe(self, text: str) -> tuple[str, frozenset[str], tuple[bytes, ...]]:
        t = near_text(text, self.rule)
        grams = shingles(t, self.ngram)
        return t, grams, self._band_keys(grams)

    # ------------------------------------------------------------------ public
    def put(self, text: str, value: Any, ns: str, key: str | None = None) -> bool:
        """Index ``text``'s answer under namespace ``ns`` (``key``: its exact key; defaults to ns + near text)."""
        t, grams, bands = self._describe(text)
        if not grams:
            return False
        entry = NearEntry(ns, t, grams, self.scorer.guard_terms(text, emoji=self.emoji_guard), bands, value)
        key = key or f"{ns}:near:{t}"
        with self._lock:
            if not self.store.put(key, entry):
                return False
            for band, h in enumerate(bands):
                self._buckets.setdefault((ns, band, h), set()).add(key)
            return True

    def lookup(self, text: str, ns: str) -> tuple[Any, float] | None:
        """``(value, jaccard)`` of the most similar guarded entry at or above the threshold, else None."""
        t, grams, bands = self._describe(text)
        if not grams:
            self.counts["misses"] += 1
            return None
        guard = None
        with self._lock:
            candidates: set[str] = set()
            for band, h in enumerate(bands):
                candidates |= self._buckets.get((ns, band, h), set())
            self.counts["candidates"] += len(candidates)
            best, best_sim, rejected = None, -1.0, False
            for key in candidates:
                entry = self.store.peek(key)
                if entry is None:
                    self.store.get(key)  # expired: dropped (and counted) now, its buckets with it
                    continue
                sim = 1.0 if entry.text == t else jaccard(grams, entry.grams)
                if sim < self.threshold or sim <= best_sim:
                    continue
                if self.guard:
                    if guard is None:
                        guard = self.scorer.guard_terms(text, emoji=self.emoji_guard)
                    if entry.guard != guard:
                        rejected = True
                        continue
                best, best_sim = key, sim
            if best is None:
                self.counts["misses"] += 1
                if rejected:
                    self.counts["guard_rejects"] += 1
                return None
            entry = self.store.get(best)  # counts the store's hit, refreshes recency, honours the TTL
            if entry is None:
                self.counts["misses"] += 1
                return None
            self.counts["hits"] += 1
            return entry.value, best_sim

    def get(self, text: str, ns: str, default: Any = None) -> Any:
        found = self.lookup(text, ns)
        return default if found is None else found[0]

    def drop_namespace(self, ns: str) -> int:
        with self._lock:
            return self.store.drop_prefix(f"{ns}:")

    def clear(self) -> None:
        with self._lock:
            self.store.clear()

    def __len__(self) -> int:
        return len(self.store)

    def stats(self) -> dict[str, int]:
        s = self.store.stats()
        return {**self.counts, "evictions": s["evictions"], "expired": s["expired"], "rejected": s["rejected"],
                "entries": s["entries"], "bytes": s["bytes"]}
