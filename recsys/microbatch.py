"""Dynamic micro-batching: texts that concurrent requests need encoded go through one model call.

Each request that misses the caches hands its texts to a `MicroBatcher` and waits. One worker thread
takes the texts every waiting request brought (up to `max_batch` per call), each text once, makes one
call and hands each request its rows. A text already queued or being computed for another request is
not queued again: a new release in many users' candidate lists at once is encoded once.

`max_wait_s` is Triton's `max_queue_delay`: how long the worker may hold a batch back for more texts
to join. With 0 (the default) nothing is delayed: a lone request is encoded at once, and under load
the texts that arrived while the previous batch ran form the next one.

Why batch at all on a CPU: N threads each running their own forward pass fight over the cores and
torch's intra-op pools, and each of them encodes the texts they share; one forward pass over N
requests' texts uses the same cores once, for each text once.

`instances` is Triton's instance count: up to that many batches run at once, each in its own worker
thread (a text queued or running in any of them is still not sent again). With one, a request that
arrives while a batch runs waits for it to finish before its own batch starts; on a 2-core CPU with two
RPC workers that serialised the encodes of concurrent requests whose texts were all new, and `Rank` with
20 new texts per request served 0.73-0.75x the calls per second of no batching at all (bench/README.md).

A worker exits after `idle_s` without work and is restarted by the next request, so a batcher owned
by an artifact that is no longer served holds no thread (hot reload retires artifacts without a
close call reaching their stores).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class BatcherClosed(RuntimeError):
    pass


class _Batch:
    """Texts that go through one call of `fn`; `rows` is set (or `error`) before `done`."""
    __slots__ = ("texts", "done", "rows", "error")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.done = threading.Event()
        self.rows: Sequence | None = None
        self.error: BaseException | None = None


class MicroBatcher(Generic[T]):
    """`run(texts)` returns `fn(texts)` row for row, computed in batches shared with concurrent callers.

    `fn` maps a list of distinct texts to one result per text, in order (e.g. the rows of an encoder's
    output); it is only ever called from the worker thread, one call at a time. A text already queued or
    being computed for another request is not sent again: the request waits for that batch's row.
    """

    def __init__(self, fn: Callable[[list[str]], Sequence[T]], *, max_batch: int = 64, max_wait_s: float = 0.0,
                 idle_s: float = 5.0, name: str = "encode", instances: int = 1) -> None:
        if instances < 1:
            raise ValueError(f"instances must be >= 1; got {instances}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1; got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0; got {max_wait_s}")
        if idle_s <= 0:
            raise ValueError(f"idle_s must be > 0; got {idle_s}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.idle_s = idle_s
        self.name = name
        self.instances = instances
        self._queue: deque[_Batch] = deque()
        self._open: _Batch | None = None                   # the queued batch new texts join
        self._where: dict[str, tuple[_Batch, int]] = {}    # texts queued or running -> their row
        self._cv = threading.Condition()
        self._workers = 0     # live worker threads
        self._idle = 0        # of them waiting for a batch
        self._closed = False
        # Read at scrape time (service/metrics.py), like the LRU caches' counters.
        self.batches = 0      # calls of fn
        self.requests = 0     # run() calls
        self.texts = 0        # texts asked for, duplicates included
        self.encoded = 0      # texts sent to fn

    def run(self, texts: Sequence[str]) -> list[T]:
        """One result per text; blocks until the batches holding them have run. An exception raised by
        `fn` is re-raised here, in every request waiting on that batch."""
        if not texts:
            return []
        with self._cv:
            if self._closed:
                raise BatcherClosed(f"{self.name} batcher is closed")
            slots = []
            for t in texts:
                slot = self._where.get(t)
                if slot is None:
                    batch = self._open
                    if batch is None or len(batch.texts) >= self.max_batch:
                        batch = self._open = _Batch()
                        self._queue.append(batch)
                    slot = self._where[t] = (batch, len(batch.texts))
                    batch.texts.append(t)
                slots.append(slot)
            self.requests += 1
            self.texts += len(slots)
            if self._idle == 0 and self._workers < self.instances:
                self._workers += 1
                threading.Thread(target=self._loop, name=f"microbatch-{self.name}", daemon=True).start()
            else:
                self._cv.notify_all()
        for batch in {id(b): b for b, _ in slots}.values():
            batch.done.wait()
            if batch.error is not None:
                raise batch.error
        return [batch.rows[i] for batch, i in slots]  # type: ignore[index]

    def close(self) -> None:
        """Fail the queued batches and refuse new requests; the running batch finishes."""
        with self._cv:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._open = None
            for batch in pending:
                for t in batch.texts:
                    self._where.pop(t, None)
            self._cv.notify_all()
        for batch in pending:
            batch.error = BatcherClosed(f"{self.name} batcher is closed")
            batch.done.set()

    def _take(self) -> _Batch | None:
        """The next batch to run, or None when the worker should exit (idle or closed)."""
        with self._cv:
            while True:
                if not self._queue:
                    self._idle += 1
                    self._cv.wait_for(lambda: self._queue or self._closed, timeout=self.idle_s)
                    self._idle -= 1
                    if not self._queue:    # idle (or closed): the next run() starts a new worker
                        self._workers -= 1
                        return None
                if self.max_wait_s > 0:
                    head = self._queue[0]
                    deadline = time.monotonic() + self.max_wait_s
                    while len(head.texts) < self.max_batch and not self._closed:
                        left = deadline - time.monotonic()
                        if left <= 0 or not self._cv.wait(left) or not self._queue or self._queue[0] is not head:
                            break
                    if not self._queue or self._queue[0] is not head:
                        continue           # closed, or another worker took it: look again
                batch = self._queue.popleft()
                if batch is self._open:    # running now: later texts start a new batch
                    self._open = None
                return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                rows = self.fn(list(batch.texts))
                if len(rows) != len(batch.texts):
                    raise RuntimeError(f"{self.name}: fn returned {len(rows)} rows for {len(batch.texts)} texts")
                batch.rows = rows
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller, re-raised there
                batch.error = exc
            with self._cv:
                for t in batch.texts:
                    del self._where[t]
                self.batches += 1
                self.encoded += len(batch.texts)
            batch.done.set()
