"""The asyncio micro-batcher: items of concurrent requests share one engine call.

One :class:`MicroBatcher` per served model. Requests :meth:`~MicroBatcher.submit` their items
(already validated) and await one future; a single task on the event loop forms batches and hands
each to the model's **one worker thread** (the engine call never runs on the event loop, and two
calls never contend for the cores; ONNX Runtime runs with ``--threads`` intra-op threads inside
that call). One thread hop per *batch*, none per request.

Forming a batch:

* the oldest queued item waits at most ``max_wait_s`` for batch-mates; a batch leaves as soon as
  ``max_batch`` items are queued (and at once when the worker was busy long enough for either);
  ``max_batch=1`` turns batching off (each item its own engine call, in arrival order);
* when more than ``max_batch`` items wait, the batch takes the oldest item and the queued items
  whose length key (the text's length) is nearest to it among the oldest ``WINDOW * max_batch``,
  so one long text does not pad a whole batch of short ones. The oldest item always goes, so
  every item leaves within as many batches as there were items before it;
* results go back to each request in its own item order.

Isolation: if an engine call raises, its items are re-run one by one and only the failing
item(s) carry the exception; their batch-mates get their results.

Backpressure: at most ``queue_size`` items wait, and (``max_queue_s``) no more than the engine
clears in that long — the queue's estimated wait is its length times the engine's recent seconds
per item (a moving average over the last batches); :meth:`submit` beyond either raises
:class:`QueueFull` at once (the server answers 429), so memory and queueing delay stay bounded
whatever the engine's speed, and the queue empties on its own when the load drops. :meth:`close` stops taking new items, finishes
every queued one, then stops the worker thread (graceful shutdown, and the old model after a swap).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from time import perf_counter
from typing import Any

WINDOW = 4  # length grouping looks at the oldest WINDOW * max_batch items


class QueueFull(Exception):
    """The queue holds ``queue_size`` items already; retry after ``retry_after`` seconds."""

    def __init__(self, queued: int, queue_size: int, retry_after: int = 1, wait_s: float | None = None,
                 max_queue_s: float | None = None):
        why = (f"the queue holds {wait_s * 1000:.0f} ms of work ({queued} items), more than the limit of "
               f"{max_queue_s * 1000:.0f} ms (--max-queue-ms)" if wait_s is not None
               else f"the queue is full ({queued} of {queue_size} items waiting)")
        super().__init__(f"{why}; retry after {retry_after} s")
        self.retry_after = retry_after


class Draining(Exception):
    """The batcher is closing (shutdown, or its model was replaced or unloaded)."""


@dataclass(slots=True)
class _Request:
    future: asyncio.Future
    results: list
    remaining: int


@dataclass(slots=True)
class _Entry:
    request: _Request
    index: int
    item: Any
    key: int
    enqueued: float


class MicroBatcher:
    """Batches items for ``run_batch(items) -> results`` (called in the worker thread, one call at a time)."""

    def __init__(self, run_batch: Callable[[list[Any]], Sequence[Any]], max_batch: int = 32, max_wait_s: float = 0.002,
                 queue_size: int = 256, metrics=None, name: str = "model", max_queue_s: float | None = None):
        if max_batch < 1 or queue_size < 1 or max_wait_s < 0:
            raise ValueError("max_batch and queue_size must be >= 1, max_wait_s >= 0")
        self.run_batch = run_batch
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self.queue_size = int(queue_size)
        self.max_queue_s = float(max_queue_s) if max_queue_s else None
        self.item_seconds: float | None = None  # moving average of engine seconds per item (set by the worker)
        self.metrics = metrics  # a ModelMetrics, or None
        self.name = name
        self._pending: deque[_Entry] = deque()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"engine-{name}")
        self._task: asyncio.Task | None = None
        self._waiter: asyncio.Future | None = None
        self._need = 1
        self._closing = False
        self.batches = 0  # engine calls made (retries of a failed batch not counted)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the batching task on the running event loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    async def close(self) -> None:
        """Refuse new items, finish the queued ones, stop the worker thread."""
        self._closing = True
        self._wake()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def queued(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------------ requests
    def submit(self, items: Sequence[Any], keys: Sequence[int] | None = None) -> asyncio.Future:
        """Queue ``items`` (one request); the future resolves to their results in the same order.

        A result is the value ``run_batch`` returned for that item, or the exception it raised.
        Raises :class:`QueueFull` or :class:`Draining` at once instead of queueing.
        """
        if self._closing or self._task is None or self._task.done():
            raise Draining(f"model {self.name!r} is not accepting requests (shutting down or replaced)")
        queued = len(self._pending)
        if queued + len(items) > self.queue_size:
            raise QueueFull(queued, self.queue_size)
        per_item = self.item_seconds
        if self.max_queue_s is not None and per_item is not None and queued:
            wait = (queued + len(items)) * per_item
            if wait > self.max_queue_s:
                raise QueueFull(queued, self.queue_size, wait_s=wait, max_queue_s=self.max_queue_s)
        future = asyncio.get_running_loop().create_future()
        if not items:
            future.set_result([])
            return future
        request = _Request(future, [None] * len(items), len(items))
        now = perf_counter()
        keys = keys if keys is not None else itertools.repeat(0)
        self._pending.extend(_Entry(request, i, item, key, now) for i, (item, key) in enumerate(zip(items, keys)))
        if self.metrics is not None:
            self.metrics.queue_items.set(len(self._pending))
        if self._waiter is not None and len(self._pending) >= self._need:
            self._wake()
        return future

    # ------------------------------------------------------------------ batching
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self, need: int, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._need = need
        self._waiter = loop.create_future()
        handle = loop.call_later(timeout, self._wake) if timeout is not None else None
        try:
            await self._waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                await self._wait(1, None)
                continue
            if len(self._pending) < self.max_batch and self.max_wait_s > 0 and not self._closing:
                delay = self._pending[0].enqueued + self.max_wait_s - perf_counter()
                if delay > 0:
                    await self._wait(self.max_batch, delay)  # the batch filled, or the oldest waited long enough
            batch = self._take()
            if not batch:
                continue
            try:
                outs = await loop.run_in_executor(self._executor, self._run, batch)
            except asyncio.CancelledError:  # the loop itself was cancelled: fail its batch rather than leave it hanging
                self._deliver(batch, [Draining(f"model {self.name!r} stopped")] * len(batch))
                raise
            except Exception as err:  # the worker could not run at all (e.g. interpreter shutting down)
                outs = [err] * len(batch)
            self._deliver(batch, outs)

    def _take(self) -> list[_Entry]:
        pending = self._pending
        while pending and pending[0].request.future.done():  # its client went away: skip, don't compute
            pending.popleft()
        if len(pending) <= self.max_batch:
            batch = [e for e in pending if not e.request.future.done()]
            pending.clear()
        else:
            window = min(len(pending), WINDOW * self.max_batch)
            head = pending[0].key
            chosen = sorted(sorted(range(window), key=lambda i: (abs(pending[i].key - head), i))[:self.max_batch])
            taken = set(chosen)
            batch = [pending[i] for i in chosen]
            rest = [e for i, e in enumerate(itertools.islice(pending, window)) if i not in taken]
            for _ in range(window):
                pending.popleft()
            pending.extendleft(reversed(rest))
        if self.metrics is not None:
            self.metrics.queue_items.set(len(pending))
        return batch

    def _run(self, batch: list[_Entry]) -> list[Any]:
        """In the worker thread: one engine call; on failure, each item alone (isolation)."""
        start = perf_counter()
        items = [e.item for e in batch]
        try:
            outs = list(self.run_batch(items))
            if len(outs) != len(items):
                raise RuntimeError(f"run_batch returned {len(outs)} results for {len(items)} items")
        except Exception as err:
            if len(items) == 1:
                outs = [err]
            else:
                outs = []
                for item in items:
                    try:
                        outs.append(self.run_batch([item])[0])
                    except Exception as one:
                        outs.append(one)
        self.batches += 1
        elapsed = perf_counter() - start
        per_item = elapsed / len(batch)
        self.item_seconds = per_item if self.item_seconds is None else 0.8 * self.item_seconds + 0.2 * per_item
        m = self.metrics
        if m is not None:
            for e in batch:
                m.queue_wait_seconds.observe(start - e.enqueued)
            m.batch_size.observe(len(batch))
            m.engine_seconds.observe(elapsed)
            m.items.inc(len(batch))
        return outs

    def _deliver(self, batch: list[_Entry], outs: Sequence[Any]) -> None:
        for entry, out in zip(batch, outs):
            request = entry.request
            request.results[entry.index] = out
            request.remaining -= 1
            if request.remaining == 0 and not request.future.done():
                request.future.set_result(request.results)
