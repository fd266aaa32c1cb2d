"""The exact layer's store: an LRU bounded by entries and by bytes, with a time-to-live.

* ``max_entries`` and ``max_bytes`` both bound it; a put that crosses either evicts the least
  recently used entries until both hold. ``bytes`` counts key + value payload (``str``/``bytes``
  length, or the compact JSON of other values), not Python's object overhead; an entry larger than
  ``max_bytes`` by itself is refused (counted in ``rejected``), never stored.
* ``ttl_s``: an entry older than this is a miss (counted in ``expired``) and dropped when looked
  up; ``None`` keeps entries until evicted. ``clock`` is injectable (tests); monotonic by default.
* thread-safe (one lock); ``stats()`` gives plain counters for the server's Prometheus export.
* ``on_remove(key, value)`` is called for every entry that leaves (eviction, expiry, delete,
  replacement, clear): the near layer keeps its index in step with it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from mmsenti.errors import MmsentiError


def payload_bytes(value: Any) -> int:
    """Bytes of a value as the cache counts them: len of bytes/str (UTF-8), else of its compact JSON."""
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8"))


class LRUCache:
    """See the module docstring."""

    def __init__(self, max_entries: int = 100_000, max_bytes: int = 64 << 20, ttl_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic, sizer: Callable[[Any], int] = payload_bytes,
                 on_remove: Callable[[str, Any], None] | None = None):
        if max_entries < 1 or max_bytes < 1:
            raise MmsentiError(f"cache bounds max_entries={max_entries}, max_bytes={max_bytes}: both must be >= 1")
        if ttl_s is not None and ttl_s <= 0:
            raise MmsentiError(f"cache ttl_s={ttl_s}: give a positive number of seconds, or None for no expiry")
        self.max_entries = int(max_entries)
        self.max_bytes = int(max_bytes)
        self.ttl_s = ttl_s
        self.clock = clock
        self.sizer = sizer
        self.on_remove = on_remove
        self._data: OrderedDict[str, tuple[Any, int, float]] = OrderedDict()  # key -> (value, nbytes, expires)
        self._bytes = 0
        self._lock = threading.RLock()
        self.counts = {"hits": 0, "misses": 0, "puts": 0, "evictions": 0, "expired": 0, "rejected": 0}

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            item = self._data.get(key)
            return item is not None and not self._stale(item)

    @property
    def bytes(self) -> int:
        return self._bytes

    def _stale(self, item: tuple[Any, int, float]) -> bool:
        return self.ttl_s is not None and self.clock() >= item[2]

    def _drop(self, key: str) -> None:
        value, nbytes, _ = self._data.pop(key)
        self._bytes -= nbytes
        if self.on_remove is not None:
            self.on_remove(key, value)

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                self.counts["misses"] += 1
                return default
            if self._stale(item):
                self._drop(key)
                self.counts["expired"] += 1
                self.counts["misses"] += 1
                return default
            self._data.move_to_end(key)
            self.counts["hits"] += 1
            return item[0]

    def peek(self, key: str, default: Any = None) -> Any:
        """The value if present and fresh, without counting a hit or refreshing its recency."""
        with self._lock:
            item = self._data.get(key)
            return default if item is None or self._stale(item) else item[0]

    def put(self, key: str, value: Any) -> bool:
        """Store ``value``; False (and counted in ``rejected``) when it alone exceeds ``max_bytes``."""
        nbytes = len(key.encode("utf-8")) + self.sizer(value)
        with self._lock:
            if key in self._data:
                self._drop(key)
            if nbytes > self.max_bytes:
                self.counts["rejected"] += 1
                return False
            expires = self.clock() + self.ttl_s if self.ttl_s is not None else float("inf")
            self._data[key] = (value, nbytes, expires)
            self._bytes += nbytes
            self.counts["puts"] += 1
            while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
                self._drop(next(iter(self._data)))
                self.counts["evictions"] += 1
            return True

    def delete(self, key: str) -> bool:
        with self._lock:
            if key not in self._data:
                return False
            self._drop(key)
            return True

    def drop_prefix(self, prefix: str) -> int:
        """Remove every key starting with ``prefix`` (an old model's namespace after a swap); returns the count."""
        with self._lock:
            keys = [k for k in self._data if k.startswith(prefix)]
            for k in keys:
                self._drop(k)
            return len(keys)

    def clear(self) -> None:
        with self._lock:
            for k in list(self._data):
                self._drop(k)

    def keys(self) -> list[str]:
        """Keys, least recently used first."""
        with self._lock:
            return list(self._data)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self.counts, "entries": len(self._data), "bytes": self._bytes}
