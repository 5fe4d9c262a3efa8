"""The audit log: every state change leaves one row (who, what, when, from where, result),
the database refuses to change or remove rows, and the API and CLI filters take no SQL.

The route-type tests drive a real server; the middleware's edge cases (login attempts, a
crashing route, a database that is down) run in-process around a tiny ASGI app; the
append-only tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from modelhost.audit import service
from modelhost.audit.middleware import AuditMiddleware
from modelhost.audit.service import Entry
from modelhost.audit.tables import AuditRow
from modelhost.audit.writer import AuditWriter
from modelhost.db import Database, utcnow
from modelhost.errors import InvalidInput
from tests.security.small_model import deploy_tiny, infer_body
from tests.security.support import Target, admin, target
from tests.servers import ADMIN_KEY, Server
from tests.store.conftest import db, postgres_template

__all__ = ["admin", "db", "postgres_template", "target"]  # fixtures, imported for pytest
ADMIN_ACTOR = f"admin ({ADMIN_KEY[:8]})"
WRONG_KEY = "mh_wrong_0123456789abcdefghijklmnopqrstuvwxyz"


# --- the real server: one row per state change, none for reads and inference


@pytest.fixture(scope="module")
def server(target: Target) -> Server:
    return target.server


@pytest.fixture(scope="module")
def history(server: Server, admin: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Make one request of each kind; return what each should have left, keyed by a label."""
    viewer = admin.post("/api/v1/keys", json={"name": "audit-viewer", "role": "viewer"}).json()
    as_viewer = {"Authorization": f"Bearer {viewer['key']}"}
    steps: dict[str, Any] = {"viewer": viewer}

    def step(label: str, status: int, r: httpx.Response) -> None:
        assert r.status_code == status, (label, r.text)

    step(
        "sample", 201, admin.post("/api/v1/datasets/samples/iris", headers={"X-Request-Id": "audit-sample-1"})
    )
    step("denied", 403, admin.delete("/api/v1/datasets/iris", headers=as_viewer))
    step(
        "unauthenticated",
        401,
        httpx.delete(server.url + "/api/v1/datasets/iris", headers={"Authorization": f"Bearer {WRONG_KEY}"}),
    )
    deploy_tiny(server.url, admin, tmp_path_factory.mktemp("tiny"))  # import (POST) and deploy (PUT)
    infer_only = admin.post("/api/v1/keys", json={"name": "audit-infer", "deployment": "tiny"}).json()
    steps["infer_only"] = infer_only
    as_infer_only = {"Authorization": f"Bearer {infer_only['key']}"}
    step("infer-only key", 403, admin.post("/api/v1/datasets/samples/wine", headers=as_infer_only))
    step("alias", 200, admin.put("/api/v1/models/tiny/aliases/prod", json={"version": 1}))
    step("bad run", 400, admin.post("/api/v1/runs", json={"dataset": "iris", "epochs": -1}))
    step("missing run", 404, admin.post("/api/v1/runs/424242/cancel"))
    failed_login = {"username": "nobody", "password": "not-the-password-1"}
    step("login", 401, httpx.post(server.url + "/api/v1/login", json=failed_login))
    step("reads", 200, admin.get("/api/v1/datasets"))
    step("infer", 200, admin.post("/v2/models/tiny/infer", json=infer_body()))
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    steps["chat"] = admin.post("/v1/chat/completions", json=chat).status_code
    step("delete", 204, admin.delete("/api/v1/datasets/iris"))
    step("revoke", 200, admin.delete(f"/api/v1/keys/{viewer['id']}"))
    return steps


def entries(admin: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    r = admin.get("/api/v1/audit", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    return r.json()["entries"]


def only(rows: list[dict[str, Any]], method: str, path: str, actor: str | None = None) -> dict[str, Any]:
    found = [e for e in rows if (e["method"], e["path"]) == (method, path) and actor in (None, e["actor"])]
    assert len(found) == 1, (method, path, found)
    return found[0]


@pytest.mark.slow
def test_every_state_change_leaves_one_row(admin: httpx.Client, history: dict[str, Any]) -> None:
    rows = entries(admin)
    viewer = f"audit-viewer ({history['viewer']['prefix']})"
    infer_only = f"audit-infer ({history['infer_only']['prefix']})"
    expected = [  # method, route template, actor, target, status, outcome
        ("POST", "/api/v1/keys", ADMIN_ACTOR, "audit-viewer", 201, "ok"),
        ("POST", "/api/v1/keys", ADMIN_ACTOR, "audit-infer", 201, "ok"),
        ("POST", "/api/v1/datasets/samples/wine", infer_only, None, 403, "denied"),  # refused before routing
        ("POST", "/api/v1/datasets/samples/{sample}", ADMIN_ACTOR, "iris", 201, "ok"),
        ("POST", "/api/v1/models/{name}/import", ADMIN_ACTOR, "tiny", 201, "ok"),
        ("PUT", "/api/v1/deployments/{name}", ADMIN_ACTOR, "tiny", 201, "ok"),
        ("PUT", "/api/v1/models/{name}/aliases/{alias}", ADMIN_ACTOR, "name=tiny alias=prod", 200, "ok"),
        ("POST", "/api/v1/runs", ADMIN_ACTOR, None, 400, "failed"),
        ("POST", "/api/v1/runs/{run_id}/cancel", ADMIN_ACTOR, "424242", 404, "failed"),
        ("DELETE", "/api/v1/keys/{key_id}", ADMIN_ACTOR, str(history["viewer"]["id"]), 200, "ok"),
    ]
    fields = ("method", "path", "actor", "target", "status", "outcome")
    for want in expected:
        found = [e for e in rows if tuple(e[f] for f in fields) == want]
        assert len(found) == 1, (want, [e for e in rows if e["path"] == want[1]])
        assert found[0]["client"] == "127.0.0.1" and found[0]["actor_key_id"] is not None
    deletes = [e for e in rows if e["method"] == "DELETE" and e["path"] == "/api/v1/datasets/{name}"]
    assert [(e["actor"], e["status"], e["outcome"]) for e in deletes] == [
        (ADMIN_ACTOR, 204, "ok"),  # newest first
        (viewer, 403, "denied"),
    ]
    assert (
        only(rows, "POST", "/api/v1/datasets/samples/{sample}", ADMIN_ACTOR)["request_id"] == "audit-sample-1"
    )
    assert len({e["id"] for e in rows}) == len(rows)
    times = [dt.datetime.fromisoformat(e["at"]) for e in rows]
    assert times == sorted(times, reverse=True) and all(t.tzinfo is not None for t in times)


@pytest.mark.slow
def test_a_request_with_a_wrong_key_is_recorded_as_denied(
    admin: httpx.Client, history: dict[str, Any]
) -> None:
    row = only(entries(admin, actor="anonymous"), "DELETE", "/api/v1/datasets/iris")  # raw path: not routed
    assert (row["status"], row["outcome"], row["actor_key_id"], row["target"]) == (401, "denied", None, None)


@pytest.mark.slow
def test_reads_and_inference_leave_no_rows(admin: httpx.Client, history: dict[str, Any]) -> None:
    rows = entries(admin)
    assert {e["method"] for e in rows} <= {"POST", "PUT", "PATCH", "DELETE"}
    assert [e["path"] for e in rows if not e["path"].startswith("/api/v1/")] == []


@pytest.mark.slow
def test_filters_select_rows_and_pages_do_not_overlap(admin: httpx.Client, history: dict[str, Any]) -> None:
    everything = entries(admin)
    assert {e["path"] for e in entries(admin, action="DELETE")} == {
        "/api/v1/datasets/{name}",
        "/api/v1/datasets/iris",
        "/api/v1/keys/{key_id}",
    }
    datasets = entries(admin, action="DELETE /api/v1/datasets/{name}")
    assert [e["status"] for e in datasets] == [204, 403]
    assert {e["outcome"] for e in entries(admin, outcome="denied")} == {"denied"}
    viewer = f"audit-viewer ({history['viewer']['prefix']})"
    infer_only = f"audit-infer ({history['infer_only']['prefix']})"
    assert [e["actor"] for e in entries(admin, outcome="denied")] == [
        "nobody",
        infer_only,
        "anonymous",
        viewer,
    ]
    assert [e["actor"] for e in entries(admin, actor="audit-viewer")] == [viewer]
    assert len(entries(admin, actor="admin")) == len(entries(admin, actor=ADMIN_ACTOR)) == len(everything) - 4
    middle = everything[len(everything) // 2]
    since = entries(admin, since=middle["at"])
    assert since == [e for e in everything if e["at"] >= middle["at"]]
    assert entries(admin, until=middle["at"]) == [e for e in everything if e["at"] < middle["at"]]
    pages, cursor = [], None
    while True:
        r = admin.get("/api/v1/audit", params={"limit": 3, **({"cursor": cursor} if cursor else {})}).json()
        pages.append(r["entries"])
        if (cursor := r["next_cursor"]) is None:
            break
    assert [e for page in pages for e in page] == everything and all(len(p) <= 3 for p in pages)


SQL_FRAGMENTS = [
    {"actor": "admin' OR '1'='1"},
    {"actor": "admin; DROP TABLE audit_log; --"},
    {"actor": "%"},
    {"action": "DELETE' OR 1=1 --"},
    {"action": "/api/v1/%"},
    {"action": "/api/v1/datasets' UNION SELECT * FROM api_keys --"},
    {"action": "SELECT /api"},
    {"outcome": "ok' OR '1'='1"},
    {"since": "2020-01-01' OR '1'='1"},
    {"since": "2020-01-01T00:00:00"},  # no timezone
    {"until": "1; DELETE FROM audit_log"},
    {"cursor": "1 OR 1=1"},
    {"cursor": "0"},
    {"limit": "0"},
    {"limit": "100000"},
]


@pytest.mark.slow
@pytest.mark.parametrize("params", SQL_FRAGMENTS, ids=lambda p: next(iter(p.items()))[1])
def test_filters_refuse_sql_fragments(
    admin: httpx.Client, history: dict[str, Any], params: dict[str, str]
) -> None:
    before = entries(admin)
    r = admin.get("/api/v1/audit", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_input"
    assert next(iter(params)) in r.json()["error"]["message"]
    assert entries(admin) == before


@pytest.mark.slow
def test_only_admins_read_the_log(server: Server, admin: httpx.Client, history: dict[str, Any]) -> None:
    member = admin.post("/api/v1/keys", json={"name": "audit-member", "role": "member"}).json()
    r = httpx.get(server.url + "/api/v1/audit", headers={"Authorization": f"Bearer {member['key']}"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "forbidden"
    assert httpx.get(server.url + "/api/v1/audit").status_code == 401
    project_admin = admin.post("/api/v1/keys", json={"name": "audit-project-admin", "role": "admin"}).json()
    r = httpx.get(server.url + "/api/v1/audit", headers={"Authorization": f"Bearer {project_admin['key']}"})
    assert r.status_code == 403, "a project's admin must not read every project's changes"
    assert "platform admin" in r.json()["error"]["message"]


@pytest.mark.slow
def test_a_failed_login_is_recorded_under_the_name_it_gave(
    admin: httpx.Client, history: dict[str, Any]
) -> None:
    [row] = entries(admin, action="POST /api/v1/login")
    assert (row["actor"], row["status"], row["outcome"], row["actor_key_id"]) == (
        "nobody",
        401,
        "denied",
        None,
    )
    assert "not-the-password" not in json.dumps(row)


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**server.env, "MODELHOST_URL": server.url, "MODELHOST_API_KEY": ADMIN_KEY}
    cmd = [sys.executable, "-m", "modelhost.cli", "audit", "list", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_cli_lists_and_filters(server: Server, history: dict[str, Any]) -> None:
    out = cli(server, "--json", "--action", "DELETE /api/v1/datasets", "--outcome", "ok", "--actor", "admin")
    page = json.loads(out.stdout)
    assert [(e["path"], e["target"], e["status"]) for e in page["entries"]] == [
        ("/api/v1/datasets/{name}", "iris", 204)
    ]
    assert page["next_cursor"] is None
    table = cli(server, "--limit", "2")
    assert table.returncode == 0 and "more: --cursor" in table.stdout and "outcome" in table.stdout
    since = cli(server, "--json", "--since", "2999-01-01T00:00:00Z")
    assert json.loads(since.stdout) == {"entries": [], "next_cursor": None}
    bad = cli(server, "--actor", "x' OR '1'='1")
    assert bad.returncode == 1 and "actor must be a key or user name" in bad.stderr


# --- the middleware around a small app: login attempts, crashes, a database that is down


async def login(request: Request) -> JSONResponse:
    body = await request.json()
    ok = body.get("password") == "right-password-123"
    return JSONResponse({"user": body["username"]}, status_code=200 if ok else 401)


async def crash(request: Request) -> JSONResponse:
    raise RuntimeError("boom")


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'm.db'}")
    database.migrate()
    yield database
    database.dispose()


def small_app(db: Database, writer: AuditWriter | None = None) -> AuditMiddleware:
    app = Starlette(
        routes=[Route("/api/v1/login", login, methods=["POST"]), Route("/crash", crash, methods=["POST"])]
    )
    return AuditMiddleware(app, db, writer)


async def call(app: AuditMiddleware, path: str, **kw: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("203.0.113.9", 4444))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        return await c.post(path, **kw)


def all_rows(db: Database) -> list[AuditRow]:
    with db.session() as s:
        return list(s.scalars(sa.select(AuditRow).order_by(AuditRow.id)))


@pytest.mark.anyio
async def test_login_attempts_are_recorded_by_user_name_without_the_password(sqlite: Database) -> None:
    database = sqlite
    app = small_app(database)
    assert (
        await call(app, "/api/v1/login", json={"username": "alice", "password": "wrong-password-1"})
    ).status_code == 401
    assert (
        await call(app, "/api/v1/login", json={"username": "alice", "password": "right-password-123"})
    ).status_code == 200
    form = {"username": "mallory\r\n\x1b[31mFAKE", "password": "x"}
    assert (
        await call(app, "/api/v1/login", data=form)
    ).status_code == 500  # a form is not JSON: the route fails
    assert app.writer.flush()
    rows = all_rows(database)
    assert [(r.actor, r.status, r.outcome, r.client) for r in rows] == [
        ("alice", 401, "denied", "203.0.113.9"),
        ("alice", 200, "ok", "203.0.113.9"),
        ("mallory\\x0d\\x0a\\x1b[31mFAKE", 500, "failed", "203.0.113.9"),  # control characters escaped
    ]
    dumped = " ".join(str(v) for r in rows for v in vars(r).values())
    assert "password" not in dumped and "right-password" not in dumped
    app.writer.close()


@pytest.mark.anyio
async def test_a_crashing_route_is_recorded_as_failed(sqlite: Database) -> None:
    database = sqlite
    app = small_app(database)
    assert (await call(app, "/crash")).status_code == 500
    assert app.writer.flush()
    [row] = all_rows(database)
    assert (row.actor, row.method, row.path, row.status, row.outcome) == (
        "anonymous",
        "POST",
        "/crash",
        500,
        "failed",
    )
    app.writer.close()


@pytest.mark.anyio
async def test_requests_proceed_when_the_log_cannot_be_written(caplog: pytest.LogCaptureFixture) -> None:
    unreachable = Database("postgresql://postgres@127.0.0.1:1/nothing")  # nothing listens on port 1
    writer = AuditWriter(unreachable, retry_delays_s=(0.0,))
    app = small_app(unreachable, writer)
    with caplog.at_level(logging.ERROR, logger="modelhost.audit"):
        r = await call(app, "/api/v1/login", json={"username": "bob", "password": "right-password-123"})
        assert r.status_code == 200  # fail-open: the answer does not wait for the log
        assert writer.flush(timeout=30)
    assert writer.dropped == 1
    assert "audit log: entries lost because the database refused them" in caplog.text
    writer.close()
    unreachable.dispose()


# --- the database itself: append-only, and the service's filters


def entry(
    actor: str, method: str = "POST", path: str = "/api/v1/datasets", status: int = 201, **kw: Any
) -> Entry:
    return Entry(
        at=kw.pop("at", utcnow()),
        actor=actor,
        method=method,
        path=path,
        status=status,
        outcome=service.outcome_of(status),
        client="127.0.0.1",
        **kw,
    )


def test_rows_cannot_be_changed_or_removed(db: Database) -> None:
    with db.session() as s:
        service.record(
            s, [entry("alice"), entry("bob", "DELETE", "/api/v1/datasets/{name}", 204, target="d")]
        )
    statements = [
        "UPDATE audit_log SET actor = 'mallory'",
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE actor = 'bob'",
    ]
    if db.engine.dialect.name == "postgresql":
        statements.append("TRUNCATE audit_log")
    for statement in statements:
        with pytest.raises(sa.exc.DBAPIError, match="audit_log is append-only"), db.session() as s:
            s.execute(sa.text(statement))
    with pytest.raises(sa.exc.DBAPIError, match="audit_log is append-only"), db.session() as s:
        s.delete(s.scalars(sa.select(AuditRow)).first())
    with pytest.raises(sa.exc.DBAPIError, match="audit_log is append-only"), db.session() as s:
        s.scalars(sa.select(AuditRow)).first().status = 200  # type: ignore[union-attr]
    assert [(r.actor, r.status) for r in all_rows(db)] == [("alice", 201), ("bob", 204)]
    with pytest.raises(sa.exc.IntegrityError), db.session() as s:  # outcomes are a closed set
        s.execute(sa.insert(AuditRow).values(**{**vars(entry("eve")), "outcome": "fine"}))


def test_query_filters_on_both_databases(db: Database) -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with db.session() as s:
        service.record(
            s,
            [
                entry("alice", at=t0, actor_key_id=1),
                entry(
                    "alice (mh_abcde)",
                    "DELETE",
                    "/api/v1/datasets/{name}",
                    403,
                    at=t0 + dt.timedelta(hours=1),
                ),
                entry("alice_2", "PUT", "/api/v1/deployments/{name}", 500, at=t0 + dt.timedelta(hours=2)),
                entry("bob", "DELETE", "/api/v1/keys/{key_id}", 200, at=t0 + dt.timedelta(hours=3)),
            ],
        )
    with db.session() as s:

        def actors(**kw: Any) -> list[str]:
            return [e.actor for e in service.query(s, **kw).entries]

        assert actors() == ["bob", "alice_2", "alice (mh_abcde)", "alice"]
        assert actors(actor="alice") == ["alice (mh_abcde)", "alice"]  # '_' is no wildcard
        assert actors(actor="alice (mh_abcde)") == ["alice (mh_abcde)"]
        assert actors(action="DELETE") == ["bob", "alice (mh_abcde)"]
        assert actors(action="/api/v1/d") == ["alice_2", "alice (mh_abcde)", "alice"]
        assert actors(action="delete /api/v1/keys") == ["bob"]
        assert actors(outcome="failed") == ["alice_2"]
        assert actors(outcome="denied") == ["alice (mh_abcde)"]
        hour = dt.timedelta(hours=1)
        assert actors(since=t0 + hour, until=t0 + 3 * hour) == ["alice_2", "alice (mh_abcde)"]
        first = service.query(s, limit=3)
        assert first.next_cursor is not None and len(first.entries) == 3
        assert [e.actor for e in service.query(s, limit=3, cursor=first.next_cursor).entries] == ["alice"]
        for bad in (
            {"actor": "a' OR 1=1"},
            {"action": "GET"},
            {"action": "/a b"},
            {"outcome": "OK"},
            {"since": dt.datetime(2026, 1, 1)},
            {"limit": 0},
            {"cursor": 0},
        ):
            with pytest.raises(InvalidInput):
                service.query(s, **bad)
