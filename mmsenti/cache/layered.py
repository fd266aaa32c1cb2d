"""The two-layer answer cache the server consults: exact (in-process LRU, then Redis), then near.

::

    cache = LayeredCache(LRUCache(max_entries=100_000, ttl_s=3600), redis=RedisCache(url),
                         near=NearCache(Scorer(["vader"]), rule=rule), rule=rule)  # rule: predictor.text_normalization
    ns = model_namespace(predictor.manifest, variant_id(mode, scorer))
    answer, layer = cache.lookup(text, ns)     # layer: "exact" | "near" | None (the response's `cached`)
    if answer is None:
        answer = ...model...
        cache.store(text, ns, answer)

* **exact**: the in-process LRU first; on its miss Redis (shared by the workers), whose hit is
  copied into the LRU. Both are keyed by :func:`mmsenti.cache.keys.exact_key`.
* **near** (opt-in, in-process): :class:`~mmsenti.cache.near.NearCache`, consulted only after both
  exact layers missed. A near hit is never written back under the new text's exact key: the exact
  layers only ever hold the model's own answer for that exact text.

Values are JSON-able answers (a dict of score, polarity, path...); Redis holds their compact JSON.
``stats()`` gives each layer's counters for the server's Prometheus export.
"""

from __future__ import annotations

import json
from typing import Any

from mmsenti.cache.keys import exact_key
from mmsenti.cache.lru import LRUCache
from mmsenti.cache.near import NearCache
from mmsenti.cache.redis_backend import RedisCache
from mmsenti.errors import MmsentiError
from mmsenti.text import check_normalization

LAYERS = ("exact", "near")


class LayeredCache:
    def __init__(self, exact: LRUCache | None = None, redis: RedisCache | None = None, near: NearCache | None = None,
                 rule: str = "none", lowercase: bool = False):
        self.exact = exact if exact is not None else LRUCache()
        self.redis = redis
        self.near = near
        self.rule = check_normalization(rule, "cache text normalization")
        self.lowercase = lowercase
        if near is not None and near.rule != self.rule:
            raise MmsentiError(f"near cache normalisation {near.rule!r} differs from the cache's {self.rule!r}; "
                               "build the NearCache with rule=<the model's rule>")

    def key(self, text: str, ns: str) -> str:
        return exact_key(text, ns, self.rule, self.lowercase)

    def lookup(self, text: str, ns: str) -> tuple[Any, str | None]:
        """``(answer, layer)``; ``(None, None)`` on a miss of every layer."""
        key = self.key(text, ns)
        value = self.exact.get(key)
        if value is not None:
            return value, "exact"
        if self.redis is not None:
            raw = self.redis.get(key)
            if raw is not None:
                value = json.loads(raw)
                self.exact.put(key, value)
                return value, "exact"
        if self.near is not None:
            found = self.near.lookup(text, ns)
            if found is not None:
                return found[0], "near"
        return None, None

    def store(self, text: str, ns: str, answer: Any) -> None:
        """Record the model's ``answer`` for ``text`` in every layer."""
        key = self.key(text, ns)
        self.exact.put(key, answer)
        if self.redis is not None:
            self.redis.put(key, json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        if self.near is not None:
            self.near.put(text, answer, ns, key=key)

    def drop_namespace(self, ns: str) -> dict[str, int]:
        """Free an old model's entries after a swap (not needed for correctness: its keys are never asked again)."""
        out = {"exact": self.exact.drop_prefix(f"{ns}:")}
        if self.redis is not None:
            out["redis"] = self.redis.drop_prefix(f"{ns}:")
        if self.near is not None:
            out["near"] = self.near.drop_namespace(ns)
        return out

    def stats(self) -> dict[str, dict[str, int]]:
        out = {"exact": self.exact.stats()}
        if self.redis is not None:
            out["redis"] = self.redis.stats()
        if self.near is not None:
            out["near"] = self.near.stats()
        return out
