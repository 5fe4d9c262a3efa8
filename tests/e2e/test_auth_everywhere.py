"""Every route of the app but the health probes refuses missing and wrong credentials.
Routes are enumerated from the app itself (included routers and mounts too), not listed by hand."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from starlette.routing import BaseRoute, Mount

from modelhost.api.app import create_app
from modelhost.api.auth import PUBLIC_PATHS
from modelhost.config import Settings
from tests.servers import ADMIN_KEY, Server

pytestmark = pytest.mark.slow


def walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    for r in routes:
        if hasattr(r, "original_router"):  # FastAPI's included router
            yield from walk(r.original_router.routes, prefix + r.include_context.prefix)
        elif isinstance(r, Mount):
            yield from walk(r.routes, prefix + r.path)
        else:
            for method in sorted(getattr(r, "methods", None) or {"GET"}):
                if method not in ("HEAD", "OPTIONS"):
                    yield method, prefix + r.path


def app_routes(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    app = create_app(Settings(home=tmp_path_factory.mktemp("routes")))
    return sorted({(m, re.sub(r"\{[^}]+\}", "1", p)) for m, p in walk(app.routes)})


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    found = app_routes(tmp_path_factory)
    assert len(found) >= 30, found  # the walk must see into included routers
    assert ("POST", "/v1/models/1:predict") in found and ("GET", "/openapi.json") in found
    return found


def test_every_non_health_route_needs_a_key(server: Server, routes: list[tuple[str, str]]) -> None:
    protected = [(m, p) for m, p in routes if p not in PUBLIC_PATHS]
    wrong = {"Authorization": "Bearer mh_wrong_0123456789abcdefghijklmnopqrstuvwxyz"}
    for method, path in protected:
        for headers in ({}, wrong, {"Authorization": "Basic " + ADMIN_KEY}, {"Authorization": "Bearer"}):
            r = httpx.request(method, server.url + path, headers=headers, timeout=10)
            assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
            assert r.headers["www-authenticate"] == "Bearer"


def test_health_probes_are_the_only_open_routes(server: Server, routes: list[tuple[str, str]]) -> None:
    assert {p for _, p in routes} >= PUBLIC_PATHS
    for path in sorted(PUBLIC_PATHS):
        assert httpx.get(server.url + path, timeout=10).status_code == 200


def test_a_valid_key_gets_through(server: Server) -> None:
    r = httpx.get(server.url + "/openapi.json", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    assert r.status_code == 200 and r.json()["info"]["title"] == "modelhost"


def test_revoked_key_is_refused_at_once(server: Server) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    created = httpx.post(
        server.url + "/api/v1/keys", json={"name": "temp", "role": "admin"}, headers=admin
    ).json()
    assert created["key"].startswith("mh_") and len(created["key"]) >= 43
    mine = {"Authorization": f"Bearer {created['key']}"}
    assert httpx.get(server.url + "/api/v1/models", headers=mine).status_code == 200
    listed = httpx.get(server.url + "/api/v1/keys", headers=admin).json()
    assert all("key" not in k and "key_hash" not in k for k in listed)
    assert httpx.delete(server.url + f"/api/v1/keys/{created['id']}", headers=admin).status_code == 200
    assert httpx.get(server.url + "/api/v1/models", headers=mine).status_code == 401


def test_non_admin_key_cannot_manage_keys(server: Server) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    member = httpx.post(
        server.url + "/api/v1/keys", json={"name": "m1", "role": "member"}, headers=admin
    ).json()
    r = httpx.get(server.url + "/api/v1/keys", headers={"Authorization": f"Bearer {member['key']}"})
    assert r.status_code == 403 and "admin" in r.json()["error"]["message"]
