"""Attack item 10, its header part, against the running server: CR/LF and ANSI escapes in
headers, request ids and paths never reach a response header, a log or the audit log raw.
Request ids are kept only when they match ``[A-Za-z0-9._:-]{1,64}``; anything else is
replaced by a generated id, which is what the answer echoes and the audit log records."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.security.support import Target, admin, assert_healthy, raw_request, target
from tests.servers import ADMIN_KEY

pytestmark = pytest.mark.slow
__all__ = ["admin", "target"]  # fixtures, imported for pytest

CLEAN_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
ESC = b"\x1b"
BAD_IDS = [
    b"\x1b[31mred\x1b[0m",  # ANSI colour
    b"\x1b]0;owned\x07",  # terminal title (OSC)
    b"id with spaces",
    b"'quoted'",
    b"\xff\xfe-latin1",
    b"a" * 65,
    b"abc%0d%0aSet-Cookie:%20x=1",
]


def headers_of(answer: bytes) -> dict[bytes, list[bytes]]:
    head = answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    found: dict[bytes, list[bytes]] = {}
    for line in head:
        name, _, value = line.partition(b":")
        found.setdefault(name.strip().lower(), []).append(value.strip())
    return found


def request_head(target: Target, method: str, path: str, *lines: bytes) -> bytes:
    host = target.url.removeprefix("http://").encode()
    return b"\r\n".join(
        [
            f"{method} {path} HTTP/1.1".encode(),
            b"Host: " + host,
            f"Authorization: Bearer {ADMIN_KEY}".encode(),
            *lines,
        ]
    )


@pytest.mark.parametrize("bad", BAD_IDS)
def test_a_dirty_request_id_is_replaced_not_echoed(target: Target, bad: bytes) -> None:
    status, answer = raw_request(
        target.url, request_head(target, "GET", "/api/v1/keys", b"X-Request-Id: " + bad)
    )
    if any(c < 0x20 for c in bad):  # control bytes: refused by uvicorn's parser before the app
        assert status == 400 and b"x-request-id" not in headers_of(answer), answer[:200]
        return
    assert status == 200, answer[:200]
    assert ESC not in answer and b"owned" not in answer and b"Set-Cookie" not in answer
    (echoed,) = headers_of(answer)[b"x-request-id"]
    assert CLEAN_ID.fullmatch(echoed) and echoed != bad


def test_crlf_in_a_header_cannot_split_the_answer(target: Target) -> None:
    """A bare CR, or a LF-led continuation, inside a header value: refused by the parser or
    cut into a header of the request; never a header of the answer."""
    for line in (b"X-Request-Id: abc\rSet-Cookie: planted=1", b"X-Request-Id: abc\n Set-Cookie: planted=1"):
        status, answer = raw_request(target.url, request_head(target, "GET", "/v2/health/live", line))
        assert status in (200, 400), answer[:200]
        assert b"planted" not in answer.split(b"\r\n\r\n", 1)[0]
        assert b"set-cookie" not in headers_of(answer)
    status, answer = raw_request(
        target.url,
        request_head(target, "GET", "/v2/health/live", b"X-Request-Id: abc", b"Set-Cookie: planted=1"),
    )
    assert status == 200 and headers_of(answer)[b"x-request-id"] == [b"abc"]
    assert b"set-cookie" not in headers_of(answer)
    assert_healthy(target.url)


def test_escapes_in_paths_and_names_come_back_escaped(target: Target, admin: httpx.Client) -> None:
    for path in (
        "/api/v1/datasets/%1b%5b31mred%0d%0aInjected:%201",
        "/v2/models/%1b%5b2J%0d%0a/infer",
        "/v1/models/x%0d%0aInjected:%201:predict",
    ):
        method = "GET" if path.startswith("/api") else "POST"
        status, answer = raw_request(
            target.url,
            request_head(target, method, path, b"Content-Type: application/json", b"Content-Length: 2"),
            b"{}",
        )
        assert 400 <= status < 500, answer[:300]
        assert ESC not in answer and b"\r\nInjected" not in answer and b"\nInjected" not in answer
    r = admin.post("/api/v1/keys", json={"name": "\x1b[31mkey\r\nInjected: 1", "role": "viewer"})
    assert r.status_code == 400 and "\\x1b" not in r.headers.get("x-request-id", "")
    assert ESC not in r.content and b"\r\n" not in r.content


def test_the_audit_log_records_the_clean_id(target: Target, admin: httpx.Client) -> None:
    r = admin.post(
        "/api/v1/keys", json={"name": "audited", "role": "viewer"}, headers={"X-Request-Id": "a b\tc"}
    )
    assert r.status_code == 201
    echoed = r.headers["x-request-id"]
    assert CLEAN_ID.fullmatch(echoed.encode())
    deadline = time.monotonic() + 10
    while True:  # the audit writer stores rows in the background
        page = admin.get("/api/v1/audit", params={"action": "POST /api/v1/keys"}).json()
        ids = [e["request_id"] for e in page["entries"]]
        if echoed in ids:
            break
        assert time.monotonic() < deadline, ids
        time.sleep(0.1)
    assert all(i is None or CLEAN_ID.fullmatch(i.encode()) for i in ids)


def test_nothing_raw_reached_the_server_log(target: Target) -> None:
    """Last in the module: the log of every attack above holds no escape and no split line."""
    log = target.server.log.read_bytes()
    assert ESC not in log
    assert not re.search(rb"^(Set-Cookie|Injected)", log, re.MULTILINE)
