"""The data plane's disconnect handling, with a real batcher and a model a test can hold:
a client that leaves while its request is queued has it dropped before it is computed, and a
request answered quickly never starts listening for the disconnect at all."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from starlette.types import Message

from modelhost.api.dataplane import ClientGone, DisconnectWatch
from modelhost.serving.batcher import Batcher, BatchingConfig
from tests.unit.test_batcher import FakeRuntime, held, rows

pytestmark = pytest.mark.anyio


class Client:
    """An ASGI ``receive`` whose client stays until ``leave()``, then reports the disconnect."""

    def __init__(self) -> None:
        self.calls = 0
        self._gone = asyncio.Event()

    async def receive(self) -> Message:
        self.calls += 1
        await self._gone.wait()
        return {"type": "http.disconnect"}

    def leave(self) -> None:
        self._gone.set()


async def reply(value: bytes) -> tuple[bytes, dict[str, str]]:
    return value, {}


AFTER_S = 0.005
answer = DisconnectWatch(AFTER_S).answer


async def test_a_quick_answer_never_listens_for_a_disconnect() -> None:
    client = Client()
    assert await answer(reply(b"ok"), client.receive) == (b"ok", {})
    await asyncio.sleep(AFTER_S * 2)  # past the point a watch would start
    assert client.calls == 0


async def test_a_client_that_leaves_while_queued_is_dropped_before_it_is_computed() -> None:
    rt = FakeRuntime()
    batcher = Batcher(rt, BatchingConfig())
    first = await held(rt, batcher)
    client = Client()

    async def predict() -> tuple[bytes, dict[str, str]]:
        out = await batcher.submit(rows((5, 5)), 1)
        return out["y"].tobytes(), {}

    request = asyncio.ensure_future(answer(predict(), client.receive))
    while client.calls == 0:  # the request waited long enough to start listening
        await asyncio.sleep(AFTER_S)
    client.leave()
    with pytest.raises(ClientGone):
        await request
    assert not request.cancelled()  # the cancel was ours: the task itself ends normally
    rt.gate.set()
    await first
    assert (await batcher.submit(rows((1, 2)), 1))["y"].tolist() == [12]
    assert [b.tolist() for b in rt.batches] == [[[0, 0]], [[1, 2]]]  # (5, 5) never ran
    await batcher.close()


async def test_a_cancel_from_outside_is_not_taken_for_a_disconnect() -> None:
    client = Client()
    never = asyncio.get_running_loop().create_future()
    request = asyncio.ensure_future(answer(never, client.receive))
    while client.calls == 0:
        await asyncio.sleep(AFTER_S)
    request.cancel()  # what a server shutdown does
    with pytest.raises(asyncio.CancelledError):
        await request
    assert never.cancelled()


async def test_of_several_waiting_requests_only_those_whose_client_left_are_dropped() -> None:
    rt = FakeRuntime()
    batcher = Batcher(rt, BatchingConfig())
    first = await held(rt, batcher)
    clients = [Client() for _ in range(3)]

    async def predict(i: int) -> tuple[bytes, dict[str, str]]:
        out = await batcher.submit(rows((i, 0)), 1)
        return out["y"].tobytes(), {}

    requests = [asyncio.ensure_future(answer(predict(i + 1), c.receive)) for i, c in enumerate(clients)]
    while not all(c.calls for c in clients):
        await asyncio.sleep(AFTER_S)
    clients[0].leave()
    clients[2].leave()
    gone = await asyncio.gather(requests[0], requests[2], return_exceptions=True)
    assert [type(g) for g in gone] == [ClientGone, ClientGone]
    rt.gate.set()
    await first
    assert np.frombuffer((await requests[1])[0], dtype=np.float32).tolist() == [20]
    assert [b.tolist() for b in rt.batches] == [[[0, 0]], [[2, 0]]]
    await batcher.close()
