"""The serving answer cache: exact layer (LRU + optional Redis) and the guarded near-duplicate layer.

* :mod:`~mmsenti.cache.keys` — the exact text (the model's own normalisation), model-version
  namespaces, blake2b keys;
* :mod:`~mmsenti.cache.lru` — the in-process LRU bounded by entries and bytes, with a TTL;
* :mod:`~mmsenti.cache.redis_backend` — the shared second exact layer for several workers;
* :mod:`~mmsenti.cache.near` — MinHash LSH over character n-grams + the negation/lexicon guard;
* :mod:`~mmsenti.cache.layered` — :class:`~mmsenti.cache.layered.LayeredCache`, what the server calls
  (``lookup`` → ``(answer, "exact" | "near" | None)``, ``store``, ``stats``).

Above :mod:`mmsenti.text` and :mod:`mmsenti.lexicon` (the guard's rules); knows nothing of engines
or HTTP. Every object counts hits / misses / evictions in plain ints (``stats()``).
"""
