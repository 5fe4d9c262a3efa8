"""The batcher with a real thread per replica and a fake runtime whose forward pass a test
can hold (a threading.Event, since the model runs off the event loop)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from modelhost.errors import GatewayTimeout, Overloaded, PlatformError
from modelhost.registry.manifest import Manifest, Signature, TensorSpec
from modelhost.serving.batcher import Batcher, BatchingConfig, BatchObserver
from modelhost.serving.runtimes.base import Runtime

pytestmark = pytest.mark.anyio

MANIFEST = Manifest(
    architecture="fake",
    config={},
    task="regression",
    signature=Signature(
        inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 2])],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1])],
    ),
)


class FakeRuntime(Runtime):
    """y = x0 * 10 + x1. Records every batch; ``gate`` holds the forward pass when cleared."""

    name = "fake"
    manifest = MANIFEST

    def __init__(self, rows_out: int | None = None) -> None:
        self.batches: list[np.ndarray] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.rows_out = rows_out
        self.fail: Exception | None = None

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.entered.set()
        self.gate.wait(10)
        x = inputs["x"]
        self.batches.append(x.copy())
        if self.fail:
            raise self.fail
        y = x[:, 0] * 10 + x[:, 1]
        return {"y": y if self.rows_out is None else y[: self.rows_out]}


class Recorder(BatchObserver):
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def batch(self, rows: int, queue_seconds: list[float]) -> None:
        self.sizes.append(rows)


def rows(*values: tuple[float, float]) -> dict[str, np.ndarray]:
    return {"x": np.array(values, dtype=np.float32)}


async def held(rt: FakeRuntime, batcher: Batcher) -> asyncio.Task:
    """Occupy the single replica with a one-row request, held inside the model."""
    rt.gate.clear()
    first = asyncio.ensure_future(batcher.submit(rows((0, 0)), 1))
    await asyncio.to_thread(rt.entered.wait, 10)
    return first


async def test_each_request_gets_its_own_rows_and_batches_form_under_load() -> None:
    rt, rec = FakeRuntime(), Recorder()
    batcher = Batcher(rt, BatchingConfig(max_batch_size=64), observer=rec)
    first = await held(rt, batcher)
    calls = [batcher.submit(rows(*[(i, j) for j in range(i % 3 + 1)]), i % 3 + 1) for i in range(10)]
    queued = [asyncio.ensure_future(c) for c in calls]
    await asyncio.sleep(0)  # let every submit enqueue
    rt.gate.set()
    results = await asyncio.gather(*queued)
    for i, out in enumerate(results):
        assert out["y"].tolist() == [i * 10 + j for j in range(i % 3 + 1)]
    assert (await first)["y"].tolist() == [0]
    assert rec.sizes == [1, sum(i % 3 + 1 for i in range(10))]  # the ten queued ran as one batch
    await batcher.close()


async def test_batches_never_exceed_max_batch_size() -> None:
    rt, rec = FakeRuntime(), Recorder()
    batcher = Batcher(rt, BatchingConfig(max_batch_size=8), observer=rec)
    first = await held(rt, batcher)
    queued = [asyncio.ensure_future(batcher.submit(rows(*[(i, 0)] * 3), 3)) for i in range(5)]
    big = asyncio.ensure_future(batcher.submit(rows(*[(9, 0)] * 20), 20))
    await asyncio.sleep(0)
    rt.gate.set()
    await asyncio.gather(first, *queued, big)
    assert rec.sizes == [1, 6, 6, 3, 20]  # two 3-row requests fit in 8; an oversized one runs alone
    await batcher.close()


async def test_a_full_queue_answers_overloaded_with_retry_after() -> None:
    rt = FakeRuntime()
    batcher = Batcher(rt, BatchingConfig(max_queue=3))
    first = await held(rt, batcher)
    waiting = [asyncio.ensure_future(batcher.submit(rows((1, 1)), 1)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded, match=r"queue full \(3 requests waiting\)") as e:
        await batcher.submit(rows((1, 1)), 1)
    assert e.value.retry_after >= 1
    rt.gate.set()
    assert [(await w)["y"].tolist() for w in waiting] == [[11], [11]]
    await first
    assert (await batcher.submit(rows((2, 2)), 1))["y"].tolist() == [22]  # room again
    await batcher.close()


async def test_a_timed_out_request_gets_504_and_is_never_computed() -> None:
    rt = FakeRuntime()
    batcher = Batcher(rt, BatchingConfig(timeout_ms=50))
    first = await held(rt, batcher)
    with pytest.raises(GatewayTimeout, match="no answer within 50 ms"):
        await batcher.submit(rows((7, 7)), 1)
    rt.gate.set()
    with pytest.raises(GatewayTimeout):
        await first  # held in the model past its deadline too
    await batcher.submit(rows((1, 2)), 1)
    assert [b.tolist() for b in rt.batches] == [[[0, 0]], [[1, 2]]]  # (7, 7) was dropped
    await batcher.close()


async def test_a_cancelled_request_is_dropped_before_it_is_computed() -> None:
    rt = FakeRuntime()
    batcher = Batcher(rt, BatchingConfig())
    first = await held(rt, batcher)
    gone = asyncio.ensure_future(batcher.submit(rows((5, 5)), 1))
    await asyncio.sleep(0)
    gone.cancel()  # what a client disconnect does
    stays = asyncio.ensure_future(batcher.submit(rows((3, 4)), 1))
    await asyncio.sleep(0)
    rt.gate.set()
    assert (await stays)["y"].tolist() == [34]
    await first
    assert [b.tolist() for b in rt.batches] == [[[0, 0]], [[3, 4]]]
    await batcher.close()


async def test_a_failing_model_fails_every_request_of_its_batch() -> None:
    rt = FakeRuntime()
    batcher = Batcher(rt, BatchingConfig())
    first = await held(rt, batcher)
    queued = [asyncio.ensure_future(batcher.submit(rows((i, 0)), 1)) for i in range(3)]
    await asyncio.sleep(0)
    rt.fail = RuntimeError("boom")
    rt.gate.set()
    results = await asyncio.gather(first, *queued, return_exceptions=True)
    assert [str(r) for r in results] == ["boom"] * 4
    await batcher.close()


async def test_a_model_returning_the_wrong_number_of_rows_is_an_error() -> None:
    batcher = Batcher(FakeRuntime(rows_out=1), BatchingConfig())
    with pytest.raises(PlatformError, match="wrong number of rows for a batch of 2"):
        await batcher.submit(rows((1, 1), (2, 2)), 2)
    await batcher.close()


async def test_close_answers_what_is_queued_then_refuses() -> None:
    rt = FakeRuntime()
    batcher = Batcher(rt, BatchingConfig(), replicas=2)
    first = await held(rt, batcher)
    queued = [asyncio.ensure_future(batcher.submit(rows((i, 1)), 1)) for i in range(4)]
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(batcher.close())
    await asyncio.sleep(0.01)
    assert not closing.done()
    with pytest.raises(Overloaded, match="being replaced"):
        await batcher.submit(rows((1, 1)), 1)
    rt.gate.set()
    assert [(await q)["y"].tolist() for q in queued] == [[1], [11], [21], [31]]
    await first
    await closing
    assert not any(t.is_alive() for t in batcher._threads)


async def test_max_wait_gathers_requests_that_arrive_soon_after() -> None:
    rt, rec = FakeRuntime(), Recorder()
    batcher = Batcher(rt, BatchingConfig(max_batch_size=4, max_wait_ms=2000), observer=rec)
    tasks = []
    for i in range(4):  # arrive one by one, the batch fills before the wait ends
        tasks.append(asyncio.ensure_future(batcher.submit(rows((i, 0)), 1)))
        await asyncio.sleep(0.01)
    assert [(await t)["y"].tolist() for t in tasks] == [[0], [10], [20], [30]]
    assert rec.sizes == [4]
    await batcher.close()
