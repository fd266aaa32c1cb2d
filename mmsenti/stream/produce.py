"""A producer of comment events at a steady rate: ``mmsenti stream produce``.

    mmsenti stream produce --from ../shared/data/sst2/dev.tsv --rate 2000 --products 50 --topic comments

Texts come from an SST-2 TSV (``sentence<TAB>label`` with a header, read by
:func:`mmsenti.data.sst2.read_tsv`) or any text file (one comment per line), cycled. Each event
gets the next ``comment_id``, a product drawn uniformly from ``--products`` ids (``p000``...; the
message key, so a product's events stay in one partition, in order), ``ts`` = the wall clock at
sending (epoch ms) and a ``user_id``. ``--disorder MS`` moves each ``ts`` back by up to that many
ms at random (out-of-order events); ``--malformed-every N`` makes every N-th message malformed
(cycling bad JSON, a missing field, an empty text) to exercise the dead-letter path.

Without ``--count``/``--seconds`` it runs until Ctrl-C. Pacing: messages leave in small bursts every few ms so the rate holds from 10/s to tens of
thousands/s; the summary (JSON on stdout) says the rate reached.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsenti.errors import MmsentiError
from mmsenti.stream.clients import KafkaSettings, ensure_topics, kafka_client
from mmsenti.stream.events import Comment

MALFORMED = (b'{"comment_id": "bad-json", "product_id": ', b'{"comment_id": "no-text", "product_id": "p000", "ts": 0}',
             b'{"comment_id": "empty", "product_id": "p000", "text": "   ", "ts": 0}')
BUILTIN_TEXTS = ("what a wonderful product , it works perfectly", "broke after two days , a waste of money",
                 "it is fine , nothing special", "absolutely love it , would buy again", "terrible customer service")


def load_texts(path: str | Path | None) -> list[str]:
    """Comment texts from an SST-2 TSV or a one-per-line text file (None: a few built-in ones)."""
    if path is None:
        return list(BUILTIN_TEXTS)
    path = Path(path)
    if not path.is_file():
        raise MmsentiError(f"--from {path}: no such file (an SST-2 .tsv or a text file with one comment per line)")
    if path.suffix == ".tsv":
        from mmsenti.data.sst2 import read_tsv

        texts = [s["text"] for s in read_tsv(path, path.stem)]
    else:
        texts = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    texts = [t for t in texts if t]
    if not texts:
        raise MmsentiError(f"--from {path}: no texts in it")
    return texts


def product_ids(n: int) -> list[str]:
    if n < 1:
        raise MmsentiError("--products must be at least 1")
    return [f"p{i:03d}" for i in range(n)]


def comments(texts: list[str], products: int, seed: int = 0, disorder_ms: int = 0, prefix: str = "c",
             clock: Callable[[], float] = time.time) -> Iterator[Comment]:
    """An endless stream of comments, event time = ``clock()`` at the moment each is drawn."""
    rng = random.Random(seed)
    ids = product_ids(products)
    for i, text in enumerate(itertools.cycle(texts)):
        ts = int(clock() * 1000) - (rng.randint(0, disorder_ms) if disorder_ms else 0)
        yield Comment(f"{prefix}{i}", rng.choice(ids), text, ts, f"u{rng.randrange(1000):03d}")


@dataclass
class ProduceStats:
    topic: str
    sent: int = 0
    malformed: int = 0
    seconds: float = 0.0
    errors: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "sent": self.sent, "malformed": self.malformed, "errors": self.errors,
                "seconds": round(self.seconds, 3), "rate": round(self.sent / self.seconds, 1) if self.seconds else None}


def produce(settings: KafkaSettings, topic: str, texts: list[str], rate: float, count: int | None = None,
            seconds: float | None = None, products: int = 50, partitions: int = 1, disorder_ms: int = 0,
            malformed_every: int = 0, seed: int = 0, transactional: bool = False,
            on_sent: Callable[[int, Comment | None], None] | None = None) -> ProduceStats:
    """Send ``count`` messages (or for ``seconds``; neither: until Ctrl-C) at ``rate``/s; returns what was sent.

    ``transactional``: one transaction per burst (``read_committed`` readers then see whole bursts).
    """
    if rate <= 0:
        raise MmsentiError("--rate must be positive (messages per second)")
    ck = kafka_client()
    ensure_topics(settings, [topic], partitions=partitions)
    conf = {"linger.ms": 5, "acks": "all", "enable.idempotence": True, "queue.buffering.max.messages": 1_000_000}
    if transactional:
        conf["transactional.id"] = f"mmsenti-produce-{topic}-{seed}"
    producer = ck.Producer(settings.librdkafka(**conf))
    stats = ProduceStats(topic)

    def delivered(err, _msg):
        if err is not None:
            stats.errors += 1

    if transactional:
        producer.init_transactions()
    stream = comments(texts, products, seed, disorder_ms)
    burst_s = 0.005 if rate >= 200 else 1.0 / rate
    t0 = time.perf_counter()
    try:
        while True:  # Ctrl-C ends an endless run; what was sent is flushed and counted
            elapsed = time.perf_counter() - t0
            if seconds is not None and elapsed >= seconds:
                break
            due = int(elapsed * rate) + 1 - stats.sent
            if count is not None:
                due = min(due, count - stats.sent)
                if due <= 0 and stats.sent >= count:
                    break
            if due > 0:
                if transactional:
                    producer.begin_transaction()
                for _ in range(due):
                    index = stats.sent + 1
                    if malformed_every and index % malformed_every == 0:
                        value, key, comment = MALFORMED[(index // malformed_every) % len(MALFORMED)], b"p000", None
                        stats.malformed += 1
                    else:
                        comment = next(stream)
                        value, key = comment.to_json(), comment.product_id.encode()
                    while True:
                        try:
                            producer.produce(topic, value, key, on_delivery=delivered)
                            break
                        except BufferError:  # local queue full: let deliveries drain
                            producer.poll(0.05)
                    stats.sent += 1
                    if on_sent is not None:
                        on_sent(stats.sent, comment)
                if transactional:
                    producer.commit_transaction()
                producer.poll(0)
            time.sleep(max(0.0, min(burst_s, t0 + (stats.sent / rate) - time.perf_counter())))
    except KeyboardInterrupt:
        if transactional:  # the interrupted burst was sent and counted: commit it (no-op error when none is open)
            with contextlib.suppress(ck.KafkaException):
                producer.commit_transaction()
    finally:
        remaining = producer.flush(30)
        stats.seconds = time.perf_counter() - t0
        stats.errors += remaining
    if stats.errors:
        raise MmsentiError(f"{stats.errors} of {stats.sent} messages to {topic!r} were not delivered "
                           f"(is the broker at {settings.bootstrap_servers} up?)")
    return stats


