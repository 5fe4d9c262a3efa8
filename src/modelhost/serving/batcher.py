"""Dynamic batching for predictive models (the Ray Serve ``@serve.batch`` idea, without Ray).

Requests go into a thread-safe queue; each replica is one thread that takes as many queued
rows as fit in ``max_batch_size`` (waiting at most ``max_wait_ms`` for more), runs them as
one batch, and hands every request its own rows back on the event loop. While a batch runs
new requests queue up, so under load batches form by themselves even with ``max_wait_ms=0``.
The model never runs on the event loop.

The requests submitted during one turn of the event loop reach the queue together, at the
end of that turn: waking a thread costs a system call and a hand-over of the GIL, so a busy
server pays it once per turn rather than once per request, and the replica wakes when the
event loop is about to go idle instead of fighting it for the GIL.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from dataclasses import dataclass
from typing import cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelhost.errors import GatewayTimeout, Overloaded, PlatformError
from modelhost.serving.runtimes.base import Runtime

Arrays = dict[str, np.ndarray]


class BatchingConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    max_batch_size: int = Field(64, ge=1, le=65536)
    """Most rows (instances) in one forward pass."""
    max_wait_ms: float = Field(0.0, ge=0, le=10_000)
    """How long the first request of a batch may wait for more; 0 runs what is queued now."""
    max_queue: int = Field(512, ge=1, le=1_000_000)
    """Most requests waiting or running; beyond it requests get 503 with Retry-After."""
    timeout_ms: float = Field(30_000, gt=0, le=3_600_000)
    """A request not answered in this time gets 504 (and is dropped if not yet computed)."""


@dataclass(eq=False, slots=True)
class Pending:
    """One queued request: its arrays (``rows`` rows each) and the future its caller awaits."""

    inputs: Arrays
    rows: int
    future: asyncio.Future[Arrays]
    enqueued: float


class BatchObserver:
    """What a batcher reports (metrics), called from replica threads; records nothing here."""

    def queued(self, depth: int) -> None: ...

    def batch(self, rows: int, queue_seconds: list[float]) -> None: ...


_STOP = object()


def _deliver(batch: list[Pending], out: Arrays | BaseException) -> None:
    """On the event loop: answer each request of a batch with its own rows (or the error)."""
    start = 0
    for p in batch:
        if not p.future.done():
            if isinstance(out, BaseException):
                p.future.set_exception(out)
            else:
                p.future.set_result({k: v[start : start + p.rows] for k, v in out.items()})
        start += p.rows


class Batcher:
    """One runtime's queue and ``replicas`` threads; the replicas share the runtime (its
    ``predict`` is thread-safe), so a replica costs a thread, not a copy of the model."""

    def __init__(
        self,
        runtime: Runtime,
        config: BatchingConfig,
        replicas: int = 1,
        observer: BatchObserver | None = None,
    ) -> None:
        self.runtime, self.config, self.replicas = runtime, config, replicas
        self.observer = observer or BatchObserver()
        self._loop = asyncio.get_running_loop()
        self._inbox: queue.SimpleQueue[list[Pending] | object] = queue.SimpleQueue()
        self._turn: list[Pending] = []  # submitted during this turn of the event loop
        # Every request has the same timeout, so they come due in the order they came: one
        # timer, armed for the oldest, serves them all (a timer per request costs more).
        self._by_age: collections.deque[Pending] = collections.deque()
        self._expiry: asyncio.TimerHandle | None = None
        self._inflight = 0
        self._closing = False
        self._drained = asyncio.Event()
        self._threads = [
            threading.Thread(target=self._replica, name=f"modelhost-batch-{i}", daemon=True)
            for i in range(replicas)
        ]
        for t in self._threads:
            t.start()

    async def submit(self, inputs: Arrays, rows: int) -> Arrays:
        """Queue a request and wait for its outputs. Raises Overloaded when the queue is full
        and GatewayTimeout past ``timeout_ms``.

        A request that timed out or whose caller was cancelled (client gone) is dropped from
        the queue if it has not run yet.
        """
        if self._closing:
            raise Overloaded("deployment is being replaced; retry", retry_after=1)
        if self._inflight >= self.config.max_queue:
            raise Overloaded(
                f"queue full ({self.config.max_queue} requests waiting); retry later", retry_after=1
            )
        item = Pending(inputs, rows, self._loop.create_future(), time.perf_counter())
        self._inflight += 1
        if not self._turn:
            self._loop.call_soon(self._hand_over)  # runs after this turn's other callbacks
        self._turn.append(item)
        self._watch_deadline(item)
        try:
            return await item.future
        finally:
            self._inflight -= 1
            if self._closing and self._inflight == 0:
                self._drained.set()

    def _watch_deadline(self, item: Pending) -> None:
        by_age = self._by_age
        while by_age and by_age[0].future.done():  # answered: forget them
            by_age.popleft()
        by_age.append(item)
        if len(by_age) > 4 * self.config.max_queue:  # answered ones behind a slow one pile up
            self._by_age = collections.deque(p for p in by_age if not p.future.done())
        if self._expiry is None:
            self._arm_expiry()

    def _arm_expiry(self) -> None:
        due = self._by_age[0].enqueued + self.config.timeout_ms / 1000
        self._expiry = self._loop.call_later(max(0.0, due - time.perf_counter()), self._expire)

    def _expire(self) -> None:
        """Answer GatewayTimeout to every request past its deadline (a queued one is then
        dropped before it is computed)."""
        self._expiry = None
        now, timeout_s, by_age = time.perf_counter(), self.config.timeout_ms / 1000, self._by_age
        while by_age and (by_age[0].future.done() or by_age[0].enqueued + timeout_s <= now):
            p = by_age.popleft()
            if not p.future.done():
                p.future.set_exception(GatewayTimeout(f"no answer within {self.config.timeout_ms:g} ms"))
        if by_age:
            self._arm_expiry()

    def _hand_over(self) -> None:
        """Queue what this turn of the event loop submitted: one put, one wake-up."""
        turn, self._turn = self._turn, []
        self._inbox.put(turn)

    # --- replica threads -------------------------------------------------------------

    def _replica(self) -> None:
        self.runtime.bind_thread()
        waiting: list[Pending] = []
        while True:
            if not waiting:
                got = self._inbox.get()
                if got is _STOP:
                    return
                waiting = cast(list[Pending], got)
            batch, waiting, stop = self._fill(waiting)
            batch = [p for p in batch if not p.future.done()]  # callers that left while we waited
            if batch:
                self._run(batch)
            if stop:
                return

    def _fill(self, waiting: list[Pending]) -> tuple[list[Pending], list[Pending], bool]:
        """Take requests from ``waiting``, then from the queue, up to max_batch_size rows
        (a request larger than that runs alone). Requests whose caller left or timed out are
        dropped here, before they are computed. Returns the batch, the requests taken but
        not fitted (the next batch's first), and whether a stop was taken."""
        limit = self.config.max_batch_size
        batch: list[Pending] = []
        rows = 0
        deadline = time.perf_counter() + self.config.max_wait_ms / 1000
        while True:
            for i, p in enumerate(waiting):
                if p.future.done():
                    continue
                if batch and rows + p.rows > limit:
                    return batch, waiting[i:], False
                batch.append(p)
                rows += p.rows
                if rows >= limit:
                    return batch, waiting[i + 1 :], False
            wait = deadline - time.perf_counter()
            try:
                got = self._inbox.get(timeout=wait) if wait > 0 else self._inbox.get_nowait()
            except queue.Empty:
                return batch, [], False
            if got is _STOP:
                return batch, [], True
            waiting = cast(list[Pending], got)

    def _run(self, batch: list[Pending]) -> None:
        shapes = [tuple((n, a.shape[1:]) for n, a in sorted(p.inputs.items())) for p in batch]
        if len(set(shapes)) > 1:  # raw images of several sizes: one forward per size
            groups: dict[tuple[object, ...], list[Pending]] = {}
            for p, shape in zip(batch, shapes, strict=True):
                groups.setdefault(shape, []).append(p)
            for group in groups.values():
                self._run(group)
            return
        now = time.perf_counter()
        total = sum(p.rows for p in batch)
        self.observer.batch(total, [now - p.enqueued for p in batch])
        self.observer.queued(max(0, self._inflight - len(batch)))  # waiting, or in another replica
        out: Arrays | BaseException
        try:
            merged = (
                batch[0].inputs
                if len(batch) == 1
                else {n: np.concatenate([p.inputs[n] for p in batch]) for n in batch[0].inputs}
            )
            out = self.runtime.predict(merged)
            if any(len(v) != total for v in out.values()):
                raise PlatformError(f"model returned a wrong number of rows for a batch of {total}")
        except Exception as e:  # every request of the batch learns of the failure
            out = e
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(_deliver, batch, out)

    async def close(self) -> None:
        """Stop taking requests, answer every queued one, then stop the replica threads."""
        self._closing = True
        if self._inflight:
            await self._drained.wait()
        if self._expiry is not None:
            self._expiry.cancel()
        for _ in self._threads:
            self._inbox.put(_STOP)
        for t in self._threads:
            await asyncio.to_thread(t.join)
