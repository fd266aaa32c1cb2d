"""Read a topic as JSON lines: ``mmsenti stream consume product_sentiment``.

Reads with ``read_committed`` (what a downstream service of the exactly-once job sees; ``--uncommitted``
also shows records of open or aborted transactions), from the beginning by default, and stops once
it reached the end (``--follow`` keeps reading). ``--latest-per-key`` keeps the last record of each
message key — the compacted view of an upsert topic (the job keys windows by
``product_id|window_start``). ``--count`` prints only how many records there are.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from mmsenti.stream.clients import KafkaSettings, read_topic


def records(settings: KafkaSettings, topic: str, follow: bool = False, committed: bool = True, max_messages: int = 0,
            max_s: float = 0.0, from_beginning: bool = True, idle_s: float = 2.0) -> Iterator[tuple[str | None, Any]]:
    """``(key, value)`` pairs; a value that is JSON comes parsed, any other as text."""
    limit = max_s if max_s > 0 else (0 if follow else 600.0)
    for n, msg in enumerate(read_topic(settings, topic, committed=committed, follow=follow, max_s=limit,
                                       from_beginning=from_beginning, idle_s=idle_s), 1):
        key = None if msg.key() is None else msg.key().decode("utf-8", errors="replace")
        raw = msg.value()
        try:
            value = json.loads(raw) if raw is not None else None
        except ValueError:
            value = raw.decode("utf-8", errors="replace")
        yield key, value
        if max_messages and n >= max_messages:
            return


def print_records(pairs: Iterator[tuple[str | None, Any]], latest_per_key: bool = False, count_only: bool = False,
                  with_key: bool = False, out: TextIO = sys.stdout) -> int:
    """Print the records as JSON lines (or their number); returns how many were printed."""
    if latest_per_key:
        pairs = iter(dict(pairs).items())
    n = 0
    for key, value in pairs:
        n += 1
        if not count_only:
            line = {"key": key, "value": value} if with_key else value
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            out.flush()
    if count_only:
        out.write(f"{n}\n")
    return n
