"""Attack item 1: every route of the app refuses requests without valid credentials.

Routes are enumerated from the app itself (included routers and mounted sub-apps too), not listed
by hand, and every method each route has is tried with no key, a wrong key and malformed
``Authorization`` headers. Only the health probes (and the login, which takes a password instead
of a key) are open: the set in ``api/auth.py``'s PUBLIC_PATHS, checked here to be exactly that.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from starlette.routing import BaseRoute, Mount

from modelhost.api.app import create_app
from modelhost.api.auth import PUBLIC_PATHS
from modelhost.config import Settings
from tests.security.support import AUTH, Target, raw_request, target
from tests.servers import ADMIN_KEY

pytestmark = pytest.mark.slow
__all__ = ["target"]  # the fixture, imported for pytest

HEALTH = {"/v2/health/live", "/v2/health/ready"}
LOGIN = "/api/v1/login"  # takes a user name and password, not a key: public by design
WRONG = "mh_wrong_0123456789abcdefghijklmnopqrstuvwxyz"
BAD_HEADERS: list[dict[str, str]] = [
    {},
    {"Authorization": f"Bearer {WRONG}"},
    {"Authorization": f"Basic {ADMIN_KEY}"},
    {"Authorization": "Bearer"},
    {"Authorization": ""},
    {"Authorization": ADMIN_KEY},  # the key without a scheme
    {"Authorization": f"Token {ADMIN_KEY}"},
    {"Authorization": f"Bearer {ADMIN_KEY}x"},  # a valid key with one more character
    {"Authorization": f"Bearer {ADMIN_KEY[:-1]}"},  # ... and with one less
    {"X-Api-Key": ADMIN_KEY},  # the key, but not where modelhost reads it
]


def walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every route, looking into included routers and mounts."""
    for r in routes:
        if hasattr(r, "original_router"):  # FastAPI's included router
            yield from walk(r.original_router.routes, prefix + r.include_context.prefix)
        elif isinstance(r, Mount):
            yield from walk(r.routes, prefix + r.path)
        else:
            for method in sorted(getattr(r, "methods", None) or {"GET"}):
                if method not in ("HEAD", "OPTIONS"):
                    yield method, prefix + r.path


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    app = create_app(Settings(home=tmp_path_factory.mktemp("routes")))
    found = sorted({(m, re.sub(r"\{[^}]+\}", "1", p)) for m, p in walk(app.routes)})
    assert len(found) >= 40, found  # the walk must see into included routers
    for expected in [("POST", "/v1/models/1:predict"), ("GET", "/openapi.json"), ("GET", "/docs")]:
        assert expected in found
    assert ("POST", "/v1/chat/completions") in found and ("DELETE", "/api/v1/models/1/aliases/1") in found
    return found


def protected(routes: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(m, p) for m, p in routes if p not in PUBLIC_PATHS]


def assert_refused(r: httpx.Response, what: object) -> None:
    assert r.status_code == 401, (what, r.status_code, r.text)
    assert r.headers["www-authenticate"] == "Bearer", what
    assert ADMIN_KEY not in r.text and WRONG not in r.text  # credentials are never echoed


def test_public_paths_are_the_health_probes_and_login_only() -> None:
    assert PUBLIC_PATHS - {LOGIN} == HEALTH


def test_every_route_and_method_refuses_missing_wrong_and_malformed_keys(
    target: Target, routes: list[tuple[str, str]]
) -> None:
    with httpx.Client(base_url=target.url, timeout=10) as c:
        for method, path in protected(routes):
            for headers in BAD_HEADERS:
                assert_refused(c.request(method, path, headers=headers), (method, path, headers))


def test_unknown_paths_and_spellings_of_known_ones_need_a_key_too(target: Target) -> None:
    """Deny by default: a path no route matches, and other spellings of real ones, answer 401 (not
    404, which would tell a scanner what exists) — none of them gets through as a health probe."""
    paths = [
        "/no/such/route",
        "/api/v1/../v1/models",
        "/v2/health/live/",  # not the probe: a trailing slash
        "/v2/health/live/../../../api/v1/keys",
        "//api/v1/keys",
        "/api/v1/keys/",
        "/API/V1/KEYS",
        "/api/v1/keys%2F",
        "/v2/health/ready%00",
        "/v2/health/live;/../../api/v1/keys",
        "/metrics",
        "/docs",
        "/redoc",
        "/openapi.json",
    ]
    with httpx.Client(base_url=target.url, timeout=10) as c:
        for path in paths:
            for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                assert_refused(c.request(method, path), (method, path))
    for path in paths:  # httpx normalises dot segments; the socket sends them as they are
        status, answer = raw_request(target.url, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1".encode())
        assert status in (400, 401), (path, answer[:300])


def test_keys_with_cr_lf_or_odd_bytes_are_refused(target: Target, routes: list[tuple[str, str]]) -> None:
    """Headers httpx will not send, written on the socket: a key with CR/LF (header injection),
    a folded header, NUL, and a valid key followed by a second Authorization header."""
    key = ADMIN_KEY.encode()
    variants = [
        b"Authorization: Bearer " + key[:10] + b"\r\n" + key[10:],
        b"Authorization: Bearer " + key[:10] + b"\n" + key[10:],
        b"Authorization: Bearer " + key[:10] + b"\r" + key[10:],
        b"Authorization: Bearer\r\n " + key,  # obsolete line folding
        b"Authorization: Bearer " + key + b"\x00",
        b"Authorization: Bearer  \t ",  # an empty token after the scheme
        b"Authorization: Bearer \x1b[31m" + key,
        b"Authorization: Bearer " + WRONG.encode() + b"\r\nAuthorization: Bearer " + key,
    ]
    for method, path in [("GET", "/api/v1/keys"), ("POST", "/v1/models/x:predict"), *protected(routes)[:5]]:
        for header in variants:
            head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n".encode() + header
            status, answer = raw_request(target.url, head)
            assert status in (400, 401), (method, path, header, answer[:300])
            assert key not in answer


def test_health_probes_answer_without_a_key(target: Target, routes: list[tuple[str, str]]) -> None:
    assert {p for _, p in routes} >= HEALTH
    for path in sorted(HEALTH):
        r = httpx.get(target.url + path, timeout=10)
        assert r.status_code == 200, (path, r.text)


def test_login_is_public_but_gives_nothing_without_a_password(
    target: Target, routes: list[tuple[str, str]]
) -> None:
    if ("POST", LOGIN) not in routes:
        assert LOGIN not in PUBLIC_PATHS  # no login route: nothing may be public in its name
        return
    r = httpx.post(target.url + LOGIN, json={"username": "nobody", "password": "x" * 12}, timeout=10)
    assert r.status_code in (400, 401, 429), r.text
    assert "key" not in r.json().get("error", {}) and ADMIN_KEY not in r.text
    for method in ("GET", "PUT", "DELETE"):  # only the POST is public
        r = httpx.request(method, target.url + LOGIN, timeout=10)
        assert r.status_code in (401, 405), (method, r.status_code)


def test_a_valid_key_gets_through_every_spelling_of_bearer(target: Target) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        r = httpx.get(
            target.url + "/openapi.json", headers={"Authorization": f"{scheme} {ADMIN_KEY}"}, timeout=10
        )
        assert r.status_code == 200 and r.json()["info"]["title"] == "modelhost"
    assert httpx.get(target.url + "/api/v1/models", headers=AUTH, timeout=10).status_code == 200


@pytest.mark.anyio
async def test_a_sub_app_mounted_later_is_covered_too(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Deny by default is a middleware around everything, not a dependency each route must
    remember: a Starlette app mounted after create_app() is refused without a key as well."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def secret(_: object) -> PlainTextResponse:
        return PlainTextResponse("secret")

    app = create_app(Settings(home=tmp_path_factory.mktemp("mount") / "home", admin_key=ADMIN_KEY))
    app.mount("/plugin", Starlette(routes=[Route("/data", secret, methods=["GET", "POST"])]))
    assert ("GET", "/plugin/data") in set(walk(app.routes))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            for method in ("GET", "POST"):
                for headers in BAD_HEADERS:
                    assert_refused(
                        await c.request(method, "/plugin/data", headers=headers), (method, headers)
                    )
            r = await c.get("/plugin/data", headers=AUTH)
            assert r.status_code == 200 and r.text == "secret"
