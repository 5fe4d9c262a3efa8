"""Attack item 9, resource abuse, against the running server: oversized bodies are refused
with 413 before they are buffered (declared, undeclared, chunked; on the fast inference path,
the control plane and the OpenAI routes), huge counts and sizes are 400s, error messages do not
echo large inputs back, and a burst of 1000 concurrent requests gets 200/503/429 answers
while the health probes keep answering."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.security.small_model import deploy_tiny, infer_body
from tests.security.support import AUTH, assert_healthy, raw_request
from tests.servers import ADMIN_KEY, Server, start_server

pytestmark = pytest.mark.slow
LIMIT = 256 * 1024  # the server's max_request_bytes here
UPLOAD_LIMIT = 1024 * 1024
BIG = 200_000  # characters of a value that must not come back in a message
LARGE_PATHS = ["/v2/models/tiny/infer", "/v1/models/tiny:predict", "/api/v1/runs", "/v1/chat/completions"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("abuse") / "home",
        MODELHOST_MAX_REQUEST_BYTES=str(LIMIT),
        MODELHOST_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT),
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def tiny(server: Server, admin: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    name = deploy_tiny(server.url, admin, tmp_path_factory.mktemp("tiny"))
    r = admin.put(
        f"/api/v1/deployments/{name}", json={"model": name, "runtime": "onnx", "batching": {"max_queue": 32}}
    )
    assert r.status_code in (200, 201), r.text
    return name


def head(path: str, server: Server, *extra: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {server.url.removeprefix('http://')}",
        f"Authorization: Bearer {ADMIN_KEY}",
        "Content-Type: application/json",
        *extra,
    ]
    return "\r\n".join(lines).encode()


@pytest.mark.parametrize("path", [*LARGE_PATHS, "/api/v1/datasets"])
def test_a_declared_oversized_body_is_refused_before_a_byte_is_sent(
    server: Server, tiny: str, path: str
) -> None:
    """Content-Length of 10 GB and no body at all: the answer comes at once, so nothing waited for it."""
    started = time.monotonic()
    status, answer = raw_request(server.url, head(path, server, "Content-Length: 10000000000"))
    assert status == 413, answer
    limit = UPLOAD_LIMIT if path == "/api/v1/datasets" else LIMIT
    assert f"exceeds the {limit} byte limit".encode() in answer
    assert time.monotonic() - started < 5


def send_chunked(server: Server, path: str, total: int) -> tuple[int, bytes, int]:
    """Send up to ``total`` bytes of chunked body (no Content-Length), stopping as soon as the
    server answers; returns its status, its answer and how many bytes were sent by then."""
    host, port = server.url.removeprefix("http://").split(":")
    sent, answer = 0, b""
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(head(path, server, "Transfer-Encoding: chunked", "Connection: close") + b"\r\n\r\n")
        piece = b"[" + b"1," * 8191 + b"1"  # 16 KiB of the start of a JSON array
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < total and not select.select([sock], [], [], 0.01)[0]:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
            with contextlib.suppress(TimeoutError):
                while chunk := sock.recv(65536):
                    answer += chunk
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, answer, sent


@pytest.mark.parametrize("path", LARGE_PATHS)
def test_a_chunked_oversized_body_is_refused_at_the_limit(server: Server, tiny: str, path: str) -> None:
    status, answer, sent = send_chunked(server, path, 64 * LIMIT)
    assert status == 413, answer[:300]
    assert b"byte limit" in answer or b"request body too large" in answer
    assert sent < 8 * LIMIT  # refused once past the limit, not after reading all of it
    assert_healthy(server.url)


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        (
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 1000},
            "n",
        ),
        ("/v1/completions", {"model": "m", "prompt": "x", "max_tokens": 10**9}, "max_tokens"),
        ("/v1/completions", {"model": "m", "prompt": "x", "n": 10**6}, "n"),
        ("/v1/completions", {"model": "m", "prompt": "x", "logprobs": 10**6}, "logprobs"),
        ("/v1/models/tiny:predict", {"instances": [[1, 2, 3]] * 10_001}, "instances"),
        (
            "/v2/models/tiny/infer",
            {"inputs": [{"name": "ids", "shape": [10**12, 3], "datatype": "INT64", "data": [1, 2, 3]}]},
            "batch of 1000000000000; at most 10000",
        ),
    ],
)
def test_huge_counts_and_sizes_are_400s(
    admin: httpx.Client, tiny: str, path: str, body: dict, needle: str
) -> None:
    r = admin.post(path, json=body)
    assert r.status_code == 400, r.text
    assert needle in r.text and len(r.text) < 2000


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/chat/completions", {"model": "m" * BIG, "messages": []}),
        ("POST", "/v1/completions", {"model": "nope", "prompt": "x", "stop": ["s" * BIG] * 5}),
        ("POST", "/v1/completions", {"model": "nope", "prompt": "x", "x" * BIG: 1}),
        (
            "POST",
            "/v2/models/tiny/infer",
            {"inputs": [{"name": "n" * BIG, "shape": [1], "datatype": "FP32", "data": [1]}]},
        ),
        (
            "POST",
            "/v2/models/tiny/infer",
            {"inputs": [{"name": "ids", "shape": [1, 3], "datatype": "T" * BIG, "data": [1, 2, 3]}]},
        ),
        ("POST", "/v1/models/tiny:predict", {"instances": [["x" * BIG, 1, 2]]}),
        ("POST", "/api/v1/keys", {"name": "k" * BIG, "role": "viewer"}),
        ("POST", "/api/v1/runs", {"dataset": "d" * BIG}),
        ("GET", "/api/v1/datasets/" + "d" * 20_000, None),
        ("PUT", "/api/v1/deployments/" + "d" * 20_000, {"model": "m" * BIG}),
    ],
)
def test_error_messages_do_not_echo_large_inputs(
    admin: httpx.Client, tiny: str, method: str, path: str, body: object
) -> None:
    r = admin.request(method, path, json=body)
    assert 400 <= r.status_code < 500, r.text[:500]
    assert len(r.content) < 2000, r.text[:500]


def test_a_huge_header_is_refused_with_no_echo(server: Server) -> None:
    r = httpx.get(server.url + "/v2/health/live", headers={"Host": "h" * 8000}, timeout=10)
    assert r.status_code == 400 and len(r.content) < 1000
    assert_healthy(server.url)


async def burst(url: str, path: str, key: str, n: int) -> tuple[list[int], list[int]]:
    """``n`` concurrent inference requests, and the health probe's answers while they run."""
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as c:
        headers = {"Authorization": f"Bearer {key}"}

        async def one() -> int:
            try:
                return (await c.post(path, json=infer_body(4), headers=headers)).status_code
            except httpx.TransportError:
                return 0  # refused at the socket: counted, and must stay rare

        async def probe(done: asyncio.Event) -> list[int]:
            seen = []
            while not done.is_set() or not seen:
                seen.append((await c.get("/v2/health/live")).status_code)
                await asyncio.sleep(0.05)
            return seen

        done = asyncio.Event()
        prober = asyncio.create_task(probe(done))
        statuses = await asyncio.gather(*(one() for _ in range(n)))
        done.set()
        return list(statuses), await prober


def test_a_burst_of_1000_requests_gets_answers_and_health_keeps_answering(
    server: Server, admin: httpx.Client, tiny: str
) -> None:
    statuses, health = asyncio.run(burst(server.url, f"/v2/models/{tiny}/infer", ADMIN_KEY, 1000))
    counts = {s: statuses.count(s) for s in set(statuses)}
    assert set(counts) <= {200, 503, 0}, counts
    assert counts.get(200, 0) >= 32 and counts.get(0, 0) <= 10, counts  # the queue's worth at least
    assert health and set(health) == {200}
    assert server.proc.poll() is None
    assert_healthy(server.url)
    assert admin.post(f"/v2/models/{tiny}/infer", json=infer_body()).status_code == 200


def test_a_limited_key_bursting_gets_429s(server: Server, admin: httpx.Client, tiny: str) -> None:
    key = admin.post("/api/v1/keys", json={"name": "burst", "role": "viewer", "rate_limit_rps": 50}).json()[
        "key"
    ]
    statuses, health = asyncio.run(burst(server.url, f"/v2/models/{tiny}/infer", key, 300))
    counts = {s: statuses.count(s) for s in set(statuses)}
    assert set(counts) <= {200, 429, 503, 0} and counts.get(429, 0) >= 200, counts
    assert set(health) == {200}
    assert_healthy(server.url)


def test_a_run_may_not_ask_for_more_ranks_than_the_machine_has_cores(admin: httpx.Client) -> None:
    assert admin.post("/api/v1/datasets/samples/iris", json={"name": "iris-ranks"}).status_code == 201
    ranks = (os.cpu_count() or 1) + 1
    spec = {"dataset": "iris-ranks", "world_size": ranks, "batch_size": 8 * ranks}
    r = admin.post("/api/v1/runs", json=spec)
    cores = ranks - 1
    assert r.status_code == 400 and "world_size" in r.text and f"{cores} cores" in r.text, r.text
    assert admin.get("/api/v1/runs").json() == []  # nothing was queued
