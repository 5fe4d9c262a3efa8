"""The control plane in-process (ASGITransport, lifespan run), no sockets: roles, status
codes and the error shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from modelhost.api.app import create_app
from modelhost.config import Settings
from modelhost.datasets.samples import sample_csv

pytestmark = pytest.mark.anyio
ADMIN = "mh_inprocess_admin_key_0123456789abcdefghijklmnop"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(home=tmp_path / "home", admin_key=ADMIN))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            client.headers["Authorization"] = f"Bearer {ADMIN}"
            yield client


async def key(api: httpx.AsyncClient, role: str) -> dict[str, str]:
    r = await api.post("/api/v1/keys", json={"name": f"k-{role}", "role": role})
    assert r.status_code == 201
    return {"Authorization": f"Bearer {r.json()['key']}"}


async def test_viewers_read_members_change_admins_manage_keys(api: httpx.AsyncClient) -> None:
    viewer, member = await key(api, "viewer"), await key(api, "member")
    csv, _ = sample_csv("iris")
    upload = {"data": {"name": "iris", "target": "label"}, "files": {"file": ("iris.csv", csv, "text/csv")}}
    r = await api.post("/api/v1/datasets", headers=viewer, **upload)
    assert r.status_code == 403
    assert r.json()["error"] == {
        "type": "forbidden",
        "message": "this needs the admin or member role; the key 'k-viewer' is viewer",
    }
    assert (await api.post("/api/v1/datasets", headers=member, **upload)).status_code == 201
    assert [d["name"] for d in (await api.get("/api/v1/datasets", headers=viewer)).json()] == ["iris"]
    assert (await api.delete("/api/v1/datasets/iris", headers=viewer)).status_code == 403
    assert (await api.post("/api/v1/runs", headers=viewer, json={"dataset": "iris"})).status_code == 403
    assert (await api.get("/api/v1/keys", headers=member)).status_code == 403
    assert (await api.post("/api/v1/keys", headers=member, json={"name": "x"})).status_code == 403


async def test_errors_have_one_shape_and_name_the_problem(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/v1/runs/99999999999999999999")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_input"
    assert "run_id: Input should be less than or equal to 2147483647" in r.json()["error"]["message"]
    r = await api.get("/api/v1/runs/7")
    assert r.status_code == 404 and r.json() == {"error": {"type": "not_found", "message": "run 7 not found"}}
    r = await api.get("/api/v1/nowhere")
    assert r.status_code == 404 and r.json()["error"]["message"] == "no route GET /api/v1/nowhere"
    r = await api.patch("/api/v1/datasets")
    assert r.status_code == 405 and r.json()["error"]["type"] == "method_not_allowed"
    r = await api.post("/api/v1/keys", content=b"{oops", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]
    r = await api.post("/api/v1/keys", json={"name": "x", "expires_at": "2020-01-01T00:00:00Z"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "expires_at must be in the future"
    r = await api.post("/api/v1/datasets/samples/mnist", json={})
    assert (
        r.status_code == 400
        and "sample: Input should be 'digits', 'iris', 'wine', 'breast_cancer', 'digits_images' or 'classics'"
        in r.json()["error"]["message"]
    )


async def test_put_creates_with_201_then_updates_with_200(api: httpx.AsyncClient) -> None:
    from modelhost.training.worker import execute_run

    assert (await api.post("/api/v1/datasets/samples/iris", json={})).status_code == 201
    run = (await api.post("/api/v1/runs", json={"dataset": "iris", "epochs": 3})).json()
    app = api._transport.app  # type: ignore[attr-defined]
    assert execute_run(app.state.db, app.state.store, run["id"]) in (
        None,
        "succeeded",
    )  # or its worker got it
    while (await api.get(f"/api/v1/runs/{run['id']}")).json()["status"] != "succeeded":
        pass
    r = await api.put("/api/v1/deployments/iris", json={"model": "iris"})
    assert r.status_code == 201 and r.json()["state"] == "ready"
    r = await api.put("/api/v1/deployments/iris", json={"model": "iris", "replicas": 2})
    assert r.status_code == 200 and r.json()["replicas"] == 2
    r = await api.post("/api/v1/deployments", json={"name": "iris", "model": "iris"})
    assert r.status_code == 409 and r.json()["error"]["message"] == "deployment 'iris' already exists"
    r = await api.put("/api/v1/deployments/iris", json={"model": "iris", "batching": {"max_batch_size": 0}})
    assert r.status_code == 400 and "batching.max_batch_size" in r.json()["error"]["message"]
