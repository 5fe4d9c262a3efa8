"""The pure parts of the request guards and the rate limiter: what a parser other than
uvicorn's could let through (control bytes in a request id) and the bucket arithmetic, with
a clock the test moves."""

from __future__ import annotations

import asyncio

import pytest

from modelhost.api.guards import HostPolicy, RequestGuards, clean_request_id, host_name
from modelhost.auth.limits import TokenBucket
from modelhost.config import Settings


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        (b"abc-123_x.y:z", "abc-123_x.y:z"),
        (b"\x1b[31mred", None),
        (b"a\r\nSet-Cookie: x", None),
        (b"a" * 65, None),
        (b"", None),
        (b"caf\xc3\xa9", None),
    ],
)
def test_request_ids_are_kept_only_when_clean(value: bytes, kept: str | None) -> None:
    assert clean_request_id(value) == kept


def test_a_dirty_id_is_dropped_from_the_request_and_replaced_in_state_and_answer() -> None:
    seen = {}

    async def app(scope, receive, send) -> None:
        seen.update(headers=dict(scope["headers"]), state=scope["state"])
        await send({"type": "http.response.start", "status": 204, "headers": []})

    sent = []

    async def send(message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v2/health/live",
        "headers": [(b"host", b"localhost:8000"), (b"x-request-id", b"\x1b[2J\r\nx")],
    }
    asyncio.run(RequestGuards(app, Settings())(scope, None, send))
    rid = seen["state"]["request_id"]
    assert b"x-request-id" not in seen["headers"] and clean_request_id(rid.encode()) == rid
    answer = dict(sent[0]["headers"])
    assert answer[b"x-request-id"] == rid.encode() and answer[b"x-frame-options"] == b"DENY"


@pytest.mark.parametrize(
    ("host", "name"),
    [("LocalHost:8000", "localhost"), ("[::1]:80", "::1"), ("::1", "::1"), ("a.b", "a.b"), ("[::1", "[::1")],
)
def test_host_names_drop_the_port(host: str, name: str) -> None:
    assert host_name(host) == name


def test_the_default_hosts_are_loopback_and_the_bound_address() -> None:
    policy = HostPolicy(Settings(host="10.0.0.5"))
    assert all(policy.allows_host(h) for h in ("localhost:1", "127.0.0.1", "[::1]:8000", "10.0.0.5:8000"))
    assert not policy.allows_host("10.0.0.6") and not policy.allows_host("localhost.evil.example")
    wildcard = HostPolicy(Settings(host="0.0.0.0"))
    assert not wildcard.allows_host("0.0.0.0:8000") and wildcard.allows_host("localhost")


def test_same_origin_is_the_host_the_request_was_sent_to() -> None:
    policy = HostPolicy(Settings(allowed_origins=["https://ui.example"]))
    assert policy.allows_origin("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert not policy.allows_origin("http://127.0.0.1:9000", "127.0.0.1:8000")
    assert not policy.allows_origin("null", "127.0.0.1:8000")
    assert policy.allows_origin("https://UI.example", "127.0.0.1:8000")


def test_a_bucket_refills_at_its_rate_up_to_its_capacity_and_may_owe() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4.0, level=4.0, stamp=0.0)
    assert [bucket.take(1, 0.0) for _ in range(4)] == [0.0] * 4
    assert bucket.take(1, 0.0) == pytest.approx(0.5)  # one unit at 2 per second
    assert bucket.take(1, 0.5) == 0.0
    assert bucket.wait_for(1, 100.0) == 0.0 and bucket.level == 4.0  # capped
    bucket.level -= 10  # a finished request charged what it generated
    assert bucket.wait_for(1, 100.0) == pytest.approx(3.5)
