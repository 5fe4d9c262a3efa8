"""Dynamic batching for predictive models (the Ray Serve ``@serve.batch`` idea, without Ray).

Requests go into a thread-safe queue; each replica is one thread that takes as many queued
rows as fit in ``max_batch_size`` (waiting at most ``max_wait_ms`` for more), runs them as
one batch, and hands every request its own rows back on the event loop. While a batch runs
new requests queue up, so under load batches form by themselves even with ``max_wait_ms=0``.
The model never runs on the event loop, and a request costs one queue put and one wake-up.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field

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


@dataclass(eq=False)
class Pending:
    """One queued request: its arrays (``rows`` rows each) and the future its caller awaits."""

    inputs: Arrays
    rows: int
    future: asyncio.Future[Arrays]
    enqueued: float = field(default_factory=time.perf_counter)


class BatchObserver:
    """What a batcher reports (metrics), called from replica threads; records nothing here."""

    def queued(self, depth: int) -> None: ...

    def batch(self, rows: int, queue_seconds: list[float]) -> None: ...


_STOP = object()


def _expire(future: asyncio.Future[Arrays], timeout_ms: float) -> None:
    if not future.done():
        future.set_exception(GatewayTimeout(f"no answer within {timeout_ms:g} ms"))


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
        self._inbox: queue.SimpleQueue[Pending | object] = queue.SimpleQueue()
        self._inflight = 0
        self._closing = False
        self._drained = asyncio.Event()
        self._threads = [
            threading.Thread(target=self._replica, name=f"modelhost-batch-{i}", daemon=True)
            for i in range(replicas)
        ]
        for t in self._threads:
            t.start()

    @property
    def depth(self) -> int:
        return self._inbox.qsize()

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
        item = Pending(inputs, rows, self._loop.create_future())
        self._inflight += 1
        self._inbox.put(item)
        expiry = self._loop.call_later(
            self.config.timeout_ms / 1000, _expire, item.future, self.config.timeout_ms
        )
        try:
            return await item.future
        finally:
            expiry.cancel()
            self._inflight -= 1
            if self._closing and self._inflight == 0:
                self._drained.set()

    # --- replica threads -------------------------------------------------------------

    def _replica(self) -> None:
        carry: Pending | None = None
        while True:
            first = carry if carry is not None else self._inbox.get()
            if first is _STOP:
                return
            assert isinstance(first, Pending)
            batch, carry, stop = self._fill(first)
            batch = [p for p in batch if not p.future.done()]  # callers that left while we waited
            if batch:
                self._run(batch)
            if stop:
                return

    def _fill(self, first: Pending) -> tuple[list[Pending], Pending | None, bool]:
        """Add queued requests to ``first`` up to max_batch_size rows; returns the batch, a
        request that did not fit (next batch's first), and whether a stop was taken."""
        batch = [] if first.future.done() else [first]  # a cancelled one is dropped here
        rows = sum(p.rows for p in batch)
        deadline = time.perf_counter() + self.config.max_wait_ms / 1000
        while rows < self.config.max_batch_size:
            wait = deadline - time.perf_counter()
            try:
                item = self._inbox.get(timeout=wait) if wait > 0 else self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, None, True
            assert isinstance(item, Pending)
            if item.future.done():
                continue
            if batch and rows + item.rows > self.config.max_batch_size:
                return batch, item, False
            batch.append(item)
            rows += item.rows
        return batch, None, False

    def _run(self, batch: list[Pending]) -> None:
        now = time.perf_counter()
        total = sum(p.rows for p in batch)
        self.observer.batch(total, [now - p.enqueued for p in batch])
        self.observer.queued(self._inbox.qsize())
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
        for _ in self._threads:
            self._inbox.put(_STOP)
        for t in self._threads:
            await asyncio.to_thread(t.join)
