"""The batcher's one deadline timer: every request past its timeout is answered 504, in the
order they came, and the answered ones it keeps track of stay bounded while a slow one holds
the oldest deadline."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from modelhost.errors import GatewayTimeout
from modelhost.serving.batcher import Batcher, BatchingConfig
from tests.unit.test_batcher import FakeRuntime, held, rows

pytestmark = pytest.mark.anyio


class HoldsZeros(FakeRuntime):
    """Holds only batches whose first value is 0 (while ``gate`` is clear); others pass."""

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if inputs["x"][0, 0] != 0:
            x = inputs["x"]
            return {"y": x[:, 0] * 10 + x[:, 1]}
        return super().predict(inputs)


async def test_every_queued_request_past_its_deadline_gets_504() -> None:
    rt = FakeRuntime()
    batcher = Batcher(rt, BatchingConfig(timeout_ms=60))
    first = await held(rt, batcher)
    queued = [asyncio.ensure_future(batcher.submit(rows((i, i)), 1)) for i in range(1, 4)]
    results = await asyncio.gather(*queued, return_exceptions=True)
    assert [type(r) for r in results] == [GatewayTimeout] * 3
    rt.gate.set()
    with pytest.raises(GatewayTimeout):
        await first
    assert (await batcher.submit(rows((1, 2)), 1))["y"].tolist() == [12]  # the timer re-arms
    assert [b.tolist() for b in rt.batches] == [[[0, 0]], [[1, 2]]]  # the three never ran
    await batcher.close()


async def test_answered_requests_behind_a_slow_one_are_not_kept() -> None:
    rt = HoldsZeros()
    batcher = Batcher(rt, BatchingConfig(max_queue=3, timeout_ms=10_000), replicas=2)
    first = await held(rt, batcher)  # one replica stuck on the oldest deadline
    for i in range(1, 50):  # the other replica answers these, one by one
        assert (await batcher.submit(rows((i, 0)), 1))["y"].tolist() == [i * 10]
    assert len(batcher._by_age) <= 4 * 3 + 1
    rt.gate.set()
    await first
    await batcher.close()
    assert not any(t.is_alive() for t in batcher._threads)
