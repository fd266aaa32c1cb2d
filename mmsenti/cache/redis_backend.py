"""The shared exact layer: Redis, for several workers (the in-process LRU stays the first layer).

Values are bytes (the layered cache stores compact JSON), keys the exact keys of
:mod:`mmsenti.cache.keys` under a ``prefix`` (default ``mmsenti:``), written with ``SET ... EX ttl``
so Redis expires them itself. Dropping a swapped-out model's namespace is a ``SCAN MATCH`` +
``UNLINK`` (never ``KEYS``, which blocks the server).

A cache must never take the service down: a Redis error (refused connection, timeout) makes that
call a miss (``get``) or a no-op (``put``), is counted in ``errors`` and logged once per outage;
socket timeouts are short (50 ms by default) so a dead Redis costs little latency. Needs the
``redis`` client (``serve`` extra); the server is Debian's ``redis-server``.
"""

from __future__ import annotations

import logging
from typing import Any

from mmsenti.errors import MmsentiError

log = logging.getLogger(__name__)


class RedisCache:
    def __init__(self, url: str = "redis://127.0.0.1:6379/0", ttl_s: float | None = 3600.0, prefix: str = "mmsenti:",
                 timeout_s: float = 0.05, client: Any = None):
        if client is None:
            try:
                import redis
            except ImportError as err:
                raise MmsentiError("the Redis cache backend needs the redis client: pip install 'mmsenti[serve]'") from err
            try:
                client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
            except ValueError as err:
                raise MmsentiError(f"redis url {url!r}: {err}") from None
        if ttl_s is not None and ttl_s <= 0:
            raise MmsentiError(f"redis ttl_s={ttl_s}: give a positive number of seconds, or None for no expiry")
        self.client = client
        self.url = url
        self.ttl_s = ttl_s
        self.prefix = prefix
        self.counts = {"hits": 0, "misses": 0, "puts": 0, "errors": 0}
        self._down = False

    def _failed(self, what: str, err: Exception) -> None:
        self.counts["errors"] += 1
        if not self._down:
            log.warning("redis cache %s at %s failed (%s: %s); serving without it until it answers",
                        what, self.url, type(err).__name__, err)
        self._down = True

    def _ok(self) -> None:
        if self._down:
            log.warning("redis cache at %s answers again", self.url)
        self._down = False

    def ping(self) -> bool:
        try:
            ok = bool(self.client.ping())
        except Exception as err:  # noqa: BLE001 - any client error means "not available"
            self._failed("ping", err)
            return False
        self._ok()
        return ok

    def get(self, key: str) -> bytes | None:
        try:
            value = self.client.get(self.prefix + key)
        except Exception as err:  # noqa: BLE001
            self._failed("get", err)
            return None
        self._ok()
        self.counts["hits" if value is not None else "misses"] += 1
        return value

    def put(self, key: str, value: bytes) -> bool:
        try:
            ex = None if self.ttl_s is None else max(1, int(round(self.ttl_s)))
            self.client.set(self.prefix + key, value, ex=ex)
        except Exception as err:  # noqa: BLE001
            self._failed("put", err)
            return False
        self._ok()
        self.counts["puts"] += 1
        return True

    def delete(self, key: str) -> bool:
        try:
            return bool(self.client.delete(self.prefix + key))
        except Exception as err:  # noqa: BLE001
            self._failed("delete", err)
            return False

    def drop_prefix(self, key_prefix: str) -> int:
        """Remove every key starting with ``key_prefix`` (e.g. an old model's namespace + ':'); returns the count."""
        pattern = _glob_escape(self.prefix + key_prefix) + "*"
        removed = 0
        try:
            batch = []
            for key in self.client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    removed += self.client.unlink(*batch)
                    batch = []
            if batch:
                removed += self.client.unlink(*batch)
        except Exception as err:  # noqa: BLE001
            self._failed("drop_prefix", err)
        return removed

    def stats(self) -> dict[str, int]:
        return dict(self.counts)


def _glob_escape(text: str) -> str:
    """Escape Redis glob specials so a namespace matches literally."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
