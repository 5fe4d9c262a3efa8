"""Attack item 2, cross-tenant: a key of project alpha cannot read, list, infer on, change or
delete anything of project beta, by name or by guessed id; roles hold inside a project; a
deployment-scoped key infers on its deployment and nothing else; expired and revoked keys fail.

One real server holds two projects, each with a dataset, a trained run (from a one-trial
sweep), a model with an alias and a deployment (the tiny ONNX graph). Every refusal of
another project's resource must look exactly like the answer for a name that does not exist.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelhost.client import Client
from modelhost.errors import AlreadyExists
from tests.security.small_model import infer_body
from tests.servers import ADMIN_KEY, Server, start_server
from tests.unit.test_onnx_runtime import tiny_graph

pytestmark = pytest.mark.slow
ROLES = ("admin", "member", "viewer")
CHAT = "/v1/chat/completions"
OPENAI_BODIES: dict[str, dict[str, Any]] = {
    CHAT: {"messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"prompt": "hi"},
    "/v1/embeddings": {"input": "hi"},
}


@dataclass
class Project:
    name: str
    keys: dict[str, httpx.Client]
    """Role -> a client with a key of that role in this project."""
    key_ids: dict[str, int]
    run_id: int
    sweep_id: int

    @property
    def dataset(self) -> str:
        return f"{self.name}-iris"

    @property
    def model(self) -> str:
        return f"{self.name}-tiny"

    @property
    def trained(self) -> str:
        return f"{self.name}-trained"

    @property
    def deployment(self) -> str:
        return f"{self.name}-dep"


@dataclass
class World:
    server: Server
    admin: httpx.Client
    alpha: Project
    beta: Project

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _sweep_document(project: str) -> dict[str, Any]:
    return {
        "dataset": f"{project}-iris",
        "model": {"architecture": "mlp", "hidden_sizes": [8]},
        "epochs": 1,
        "batch_size": 32,
        "register_as": f"{project}-trained",
        "sweep": {"space": {"optimizer.lr": [0.01]}},
    }


def _populate(world_admin: httpx.Client, url: str, name: str, folder: Path) -> tuple[dict[str, Any], int]:
    """Project ``name`` with its keys, dataset, tiny model (+ alias) and deployment; its sweep
    is submitted, not awaited. Returns the keys made and the sweep id."""
    assert world_admin.post("/api/v1/projects", json={"name": name}).status_code == 201
    keys = {}
    for role in ROLES:
        r = world_admin.post("/api/v1/keys", json={"name": f"{name}-{role}", "role": role, "project": name})
        assert r.status_code == 201, r.text
        assert r.json()["project"] == name and r.json()["role"] == role
        keys[role] = r.json()
    member = {"Authorization": f"Bearer {keys['member']['key']}"}
    with httpx.Client(base_url=url, headers=member, timeout=60) as c:
        r = c.post("/api/v1/datasets/samples/iris", json={"name": f"{name}-iris"})
        assert r.status_code == 201 and r.json()["project"] == name, r.text
        (folder / "tiny.onnx").write_bytes(tiny_graph())
        with Client(url, keys["member"]["key"]) as sdk:
            assert sdk.import_model(folder / "tiny.onnx", f"{name}-tiny")["number"] == 1
        assert c.put(f"/api/v1/models/{name}-tiny/aliases/prod", json={"version": 1}).status_code == 200
        r = c.put(f"/api/v1/deployments/{name}-dep", json={"model": f"{name}-tiny", "runtime": "onnx"})
        assert r.status_code == 201 and r.json()["project"] == name, r.text
        r = c.post("/api/v1/sweeps", json=_sweep_document(name))
        assert r.status_code == 201, r.text
        return keys, r.json()["sweep"]["id"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("tenants")
    server = start_server(tmp / "home")
    admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60)
    clients: list[httpx.Client] = [admin]
    try:
        made = {}
        for name in ("alpha", "beta"):
            (tmp / name).mkdir()
            made[name] = _populate(admin, server.url, name, tmp / name)
        projects = {}
        for name, (keys, sweep_id) in made.items():
            run_id = _await_sweep(admin, sweep_id)
            by_role = {
                role: httpx.Client(
                    base_url=server.url, headers={"Authorization": f"Bearer {k['key']}"}, timeout=60
                )
                for role, k in keys.items()
            }
            clients += by_role.values()
            ids = {role: k["id"] for role, k in keys.items()}
            projects[name] = Project(name, by_role, ids, run_id, sweep_id)
        yield World(server, admin, projects["alpha"], projects["beta"])
    finally:
        for c in clients:
            c.close()
        server.stop()


def _await_sweep(admin: httpx.Client, sweep_id: int) -> int:
    deadline = time.monotonic() + 240
    while True:
        [trial] = admin.get(f"/api/v1/sweeps/{sweep_id}").json()["trials"]
        if trial["status"] not in ("queued", "running"):
            break
        assert time.monotonic() < deadline, "the sweep's run did not finish"
        time.sleep(0.2)
    assert trial["status"] == "succeeded", admin.get(f"/api/v1/runs/{trial['run_id']}").json()["error"]
    return int(trial["run_id"])


def _same_as_missing(r: httpx.Response, missing: httpx.Response, names: dict[str, str]) -> None:
    """``r`` (another project's resource) answers exactly as a resource that does not exist:
    the same status and body, but for the name or id asked for (``names``: real -> missing)."""
    assert r.status_code == missing.status_code == 404, (r.text, missing.text)
    text = r.text
    for real, absent in names.items():
        text = text.replace(real, absent)
    assert text == missing.text


def _names(r: httpx.Response, field: str = "name") -> set[Any]:
    assert r.status_code == 200, r.text
    return {item[field] for item in r.json()}


# --- reading and listing --------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_lists_hold_only_the_keys_project(world: World, role: str) -> None:
    a, b = world.alpha, world.beta
    c = a.keys[role]
    assert _names(c.get("/api/v1/datasets")) == {a.dataset}
    assert _names(c.get("/api/v1/models")) == {a.model, a.trained}
    assert _names(c.get("/api/v1/deployments")) == {a.deployment}
    assert _names(c.get("/api/v1/runs"), "id") == {a.run_id}
    assert _names(c.get("/api/v1/sweeps"), "id") == {a.sweep_id}
    assert _names(c.get("/api/v1/projects")) == {"alpha"}
    assert b.run_id not in _names(c.get("/api/v1/runs?status=succeeded"), "id")
    # the platform admin sees both
    assert {a.dataset, b.dataset} <= _names(world.admin.get("/api/v1/datasets"))


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/datasets/{dataset}",
        "/api/v1/models/{model}",
        "/api/v1/models/{model}/versions",
        "/api/v1/models/{model}/versions/1",
        "/api/v1/models/{model}/aliases",
        "/api/v1/models/{trained}",
        "/api/v1/deployments/{deployment}",
        "/api/v1/runs/{run_id}",
        "/api/v1/runs/{run_id}/metrics",
        "/api/v1/runs/{run_id}/logs",
        "/api/v1/sweeps/{sweep_id}",
        "/api/v1/projects/{name}",
        "/api/v1/projects/{name}/members",
        "/v2/models/{deployment}",
        "/v2/models/{deployment}/ready",
        "/v2/models/{deployment}/versions/1",
    ],
)
def test_reads_of_the_other_project_answer_as_missing(world: World, path: str) -> None:
    b = world.beta
    fields = {
        "dataset": b.dataset,
        "model": b.model,
        "trained": b.trained,
        "deployment": b.deployment,
        "run_id": b.run_id,
        "sweep_id": b.sweep_id,
        "name": b.name,
    }
    missing = {k: (999_999 if isinstance(v, int) else "no-such-thing") for k, v in fields.items()}
    assert world.admin.get(path.format(**fields)).status_code == 200  # it exists
    used = {str(v): str(missing[k]) for k, v in fields.items() if "{" + k + "}" in path}
    for role in ROLES:
        c = world.alpha.keys[role]
        _same_as_missing(c.get(path.format(**fields)), c.get(path.format(**missing)), used)


def test_guessed_ids_reach_only_the_keys_own_runs_and_sweeps(world: World) -> None:
    c, a = world.alpha.keys["admin"], world.alpha
    top = max(world.alpha.run_id, world.beta.run_id) + 3
    reachable = {i for i in range(1, top) if c.get(f"/api/v1/runs/{i}").status_code == 200}
    assert reachable == {a.run_id}
    sweeps = {i for i in range(1, 6) if c.get(f"/api/v1/sweeps/{i}").status_code == 200}
    assert sweeps == {a.sweep_id}
    r = c.get("/api/v1/runs/compare", params={"ids": [a.run_id, world.beta.run_id]})
    assert r.status_code == 404 and str(world.beta.run_id) in r.json()["error"]["message"]
    assert c.get("/api/v1/runs/compare", params={"ids": [a.run_id, a.run_id]}).status_code == 200


# --- changing and deleting -------------------------------------------------------------------


def _changes(b: Project) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("DELETE", f"/api/v1/datasets/{b.dataset}", None),
        ("DELETE", f"/api/v1/models/{b.model}", None),
        ("PUT", f"/api/v1/models/{b.model}/aliases/prod", {"version": 1}),
        ("DELETE", f"/api/v1/models/{b.model}/aliases/prod", None),
        ("PUT", f"/api/v1/deployments/{b.deployment}", {"model": b.model, "runtime": "onnx"}),
        ("POST", f"/api/v1/deployments/{b.deployment}/rollback", None),
        ("DELETE", f"/api/v1/deployments/{b.deployment}", None),
        ("POST", f"/api/v1/runs/{b.run_id}/cancel", None),
        ("POST", f"/api/v1/runs/{b.run_id}/resume", None),
        ("DELETE", f"/api/v1/projects/{b.name}", None),
        ("PUT", f"/api/v1/projects/{b.name}/members/nobody", {"role": "viewer"}),
    ]


def test_changes_to_the_other_project_answer_as_missing_and_change_nothing(world: World) -> None:
    b = world.beta
    before = world.admin.get(f"/api/v1/deployments/{b.deployment}").json()
    for method, path, body in _changes(b):
        r = world.alpha.keys["admin"].request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
    after = world.admin.get(f"/api/v1/deployments/{b.deployment}").json()
    assert after == before
    assert world.admin.get(f"/api/v1/datasets/{b.dataset}").status_code == 200
    assert world.admin.get(f"/api/v1/models/{b.model}/aliases").json() == {"prod": 1}


def test_creating_from_or_into_the_other_project_is_refused(world: World) -> None:
    a, b = world.alpha, world.beta
    c = a.keys["member"]
    spec = {"dataset": b.dataset, "model": {"architecture": "mlp"}, "epochs": 1, "register_as": "stolen"}
    assert c.post("/api/v1/runs", json=spec).status_code == 404  # beta's data
    r = c.post("/api/v1/deployments", json={"name": "stolen", "model": b.model, "runtime": "onnx"})
    assert r.status_code == 404  # beta's model
    r = c.post("/api/v1/datasets/samples/iris", json={"name": "planted"}, params={"project": "beta"})
    assert r.status_code == 404  # into beta
    own = {"dataset": a.dataset, "model": {"architecture": "mlp"}, "epochs": 1, "register_as": b.trained}
    r = c.post("/api/v1/runs", json=own)  # training into beta's model name
    assert r.status_code == 409 and "another project" in r.json()["error"]["message"]
    key = c.headers["Authorization"].split()[1]
    with Client(world.server.url, key) as sdk, pytest.raises(AlreadyExists, match="another project"):
        sdk.import_model(world.server.home.parent / "alpha" / "tiny.onnx", b.model)  # into beta's model
    assert len(world.admin.get(f"/api/v1/models/{b.model}/versions").json()) == 1
    assert "stolen" not in _names(world.admin.get("/api/v1/deployments"))


def test_keys_of_the_other_project_cannot_be_listed_revoked_or_minted(world: World) -> None:
    c = world.alpha.keys["admin"]
    listed = _names(c.get("/api/v1/keys"))
    assert listed >= {"alpha-admin", "alpha-member", "alpha-viewer"}
    assert not any(n.startswith("beta-") for n in listed) and "admin" not in listed
    assert c.delete(f"/api/v1/keys/{world.beta.key_ids['viewer']}").status_code == 404
    assert c.post("/api/v1/keys", json={"name": "x", "role": "viewer", "project": "beta"}).status_code == 404
    r = c.post("/api/v1/keys", json={"name": "x", "role": "admin", "project": "*"})
    assert r.status_code == 403
    assert c.post("/api/v1/keys", json={"name": "x", "deployment": world.beta.deployment}).status_code == 404
    assert world.beta.keys["viewer"].get("/api/v1/models").status_code == 200  # still live


# --- inference --------------------------------------------------------------------------------


def test_inference_on_the_other_projects_deployment_answers_as_missing(world: World) -> None:
    a, b = world.alpha, world.beta
    for role in ROLES:
        c = a.keys[role]
        assert c.post(f"/v2/models/{a.deployment}/infer", json=infer_body()).status_code == 200
        for path, body in [
            (f"/v2/models/{b.deployment}/infer", infer_body()),
            (f"/v2/models/{b.deployment}/versions/1/infer", infer_body()),
            (f"/v1/models/{b.deployment}:predict", {"instances": [[1, 2, 3]]}),
        ]:
            missing = c.post(path.replace(b.deployment, "no-such-dep"), json=body)
            _same_as_missing(c.post(path, json=body), missing, {b.deployment: "no-such-dep"})
        for path, body in OPENAI_BODIES.items():
            r = c.post(path, json={"model": b.deployment, **body})
            missing = c.post(path, json={"model": "no-such-dep", **body})
            _same_as_missing(r, missing, {b.deployment: "no-such-dep"})
        listed = c.get("/v1/models").json()["data"]
        assert b.deployment not in {m["id"] for m in listed}
    # beta's own key gets past the check (and is told it is not a language model)
    r = b.keys["viewer"].post("/v1/chat/completions", json={"model": b.deployment, **OPENAI_BODIES[CHAT]})
    assert r.status_code == 400 and "not a language model" in r.json()["error"]["message"], r.text


# --- roles inside a project ---------------------------------------------------------------------


def test_a_viewer_reads_and_infers_but_cannot_upload_train_or_deploy(world: World) -> None:
    a = world.alpha
    v = a.keys["viewer"]
    assert v.get(f"/api/v1/models/{a.model}").status_code == 200
    assert v.post(f"/v2/models/{a.deployment}/infer", json=infer_body()).status_code == 200
    refused = [
        v.post("/api/v1/datasets/samples/iris", json={"name": "viewer-upload"}),
        v.post("/api/v1/runs", json={"dataset": a.dataset, "epochs": 1, "register_as": "viewer-model"}),
        v.put("/api/v1/deployments/viewer-dep", json={"model": a.model, "runtime": "onnx"}),
        v.post(f"/api/v1/deployments/{a.deployment}/rollback"),
        v.put(f"/api/v1/models/{a.model}/aliases/staging", json={"version": 1}),
        v.post(f"/api/v1/runs/{a.run_id}/cancel"),
    ]
    for r in refused:
        assert r.status_code == 403 and "viewer" in r.json()["error"]["message"], r.text
    assert "viewer-dep" not in _names(world.admin.get("/api/v1/deployments"))


def test_a_member_cannot_delete_but_the_projects_admin_can(world: World, tmp_path: Path) -> None:
    a = world.alpha
    m = a.keys["member"]
    for path in (f"/api/v1/models/{a.trained}", f"/api/v1/datasets/{a.dataset}"):
        r = m.delete(path)
        assert r.status_code == 403 and "admin" in r.json()["error"]["message"], r.text
    assert m.delete(f"/api/v1/models/{world.beta.trained}").status_code == 404
    # the member deploys a second model; only alpha's admin can delete it
    (tmp_path / "tiny.onnx").write_bytes(tiny_graph())
    with Client(world.server.url, m.headers["Authorization"].split()[1]) as sdk:
        sdk.import_model(tmp_path / "tiny.onnx", "alpha-scratch")
    assert m.put("/api/v1/deployments/alpha-scratch", json={"model": "alpha-scratch"}).status_code == 201
    assert m.delete("/api/v1/deployments/alpha-scratch").status_code == 403
    admin = a.keys["admin"]
    r = admin.delete("/api/v1/models/alpha-scratch")
    assert r.status_code == 409 and "deployments" in r.json()["error"]["message"]
    assert admin.delete("/api/v1/deployments/alpha-scratch").status_code == 204
    assert admin.delete("/api/v1/models/alpha-scratch").status_code == 204
    assert admin.get("/api/v1/models/alpha-scratch").status_code == 404


def test_a_project_admin_mints_keys_no_higher_than_their_role(world: World) -> None:
    admin = world.alpha.keys["admin"]
    r = admin.post("/api/v1/keys", json={"name": "alpha-ci", "role": "member"})
    assert r.status_code == 201 and r.json()["project"] == "alpha" and r.json()["user"] is None
    with world.client(r.json()["key"]) as ci:
        assert _names(ci.get("/api/v1/datasets")) == {world.alpha.dataset}
    assert world.alpha.keys["member"].post("/api/v1/keys", json={"name": "m"}).status_code == 403


# --- scoped, expired and revoked keys ------------------------------------------------------------


def test_a_deployment_key_infers_on_its_deployment_only(world: World) -> None:
    a = world.alpha
    r = a.keys["member"].put("/api/v1/deployments/alpha-other", json={"model": a.model, "runtime": "onnx"})
    assert r.status_code == 201
    r = a.keys["admin"].post("/api/v1/keys", json={"name": "alpha-infer", "deployment": a.deployment})
    assert r.status_code == 201 and r.json()["deployment"] == a.deployment, r.text
    with world.client(r.json()["key"]) as k:
        assert k.post(f"/v2/models/{a.deployment}/infer", json=infer_body()).status_code == 200
        assert k.get(f"/v2/models/{a.deployment}").status_code == 200
        assert k.post("/v2/models/alpha-other/infer", json=infer_body()).status_code == 404
        assert k.post(f"/v2/models/{world.beta.deployment}/infer", json=infer_body()).status_code == 404
        assert k.get("/v1/models").json()["data"] == []  # lists only its deployment (not an LLM)
        for path in ("/api/v1/datasets", "/api/v1/models", "/api/v1/deployments", "/api/v1/keys"):
            r = k.get(path)
            assert r.status_code == 403 and "inference" in r.json()["error"]["message"], (path, r.text)
        assert k.delete(f"/api/v1/deployments/{a.deployment}").status_code == 403
    a.keys["admin"].delete("/api/v1/deployments/alpha-other")


def test_a_member_cannot_mint_a_deployment_key(world: World) -> None:
    r = world.alpha.keys["member"].post(
        "/api/v1/keys", json={"name": "d", "deployment": world.alpha.deployment}
    )
    assert r.status_code == 403


def test_an_expired_key_fails(world: World) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    r = world.alpha.keys["admin"].post(
        "/api/v1/keys", json={"name": "short-lived", "role": "viewer", "expires_at": soon.isoformat()}
    )
    assert r.status_code == 201, r.text
    with world.client(r.json()["key"]) as k:
        assert k.get("/api/v1/models").status_code == 200  # live, and now cached
        deadline = time.monotonic() + 10
        while dt.datetime.now(dt.UTC) < soon:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        r = k.get("/api/v1/models")
        assert r.status_code == 401 and "expired" in r.json()["error"]["message"]


def test_a_revoked_key_fails_at_once(world: World) -> None:
    r = world.alpha.keys["admin"].post("/api/v1/keys", json={"name": "revoked", "role": "member"})
    with world.client(r.json()["key"]) as k:
        assert k.post(f"/v2/models/{world.alpha.deployment}/infer", json=infer_body()).status_code == 200
        assert world.alpha.keys["admin"].delete(f"/api/v1/keys/{r.json()['id']}").status_code == 200
        assert k.post(f"/v2/models/{world.alpha.deployment}/infer", json=infer_body()).status_code == 401
        assert k.get("/api/v1/models").status_code == 401
