"""API keys end to end: a valid key gets through, a revoked one at once does not, and only admins
manage keys. That every route refuses missing and wrong keys is tests/security/test_routes_need_auth.py."""

from __future__ import annotations

import httpx
import pytest

from tests.servers import ADMIN_KEY, Server

pytestmark = pytest.mark.slow


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
