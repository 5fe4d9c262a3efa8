"""Users, sign-in, projects and members against the real server, through the API and the CLI.

The first platform admin comes from ``modelhost users create NAME --admin --local`` (no
sign-up); they create a project and users; a user's keys are capped by their current role in
the project, and stop working when they leave it or are disabled; failed sign-ins are throttled.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.servers import ADMIN_KEY, Server

pytestmark = pytest.mark.slow
ROOT_PASSWORD = "correct horse battery staple"
PASSWORD = "a long enough password"


def cli(server: Server, *args: str, key: str = ADMIN_KEY, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelhost.cli", *args],
        env={**server.env, "MODELHOST_URL": server.url, "MODELHOST_API_KEY": key, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def login(server: Server, user: str, password: str, project: str | None = None) -> httpx.Response:
    body = {"username": user, "password": password, "project": project}
    return httpx.post(server.url + "/api/v1/login", json=body, timeout=30)


def as_key(server: Server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


@pytest.fixture(scope="module")
def root(server: Server) -> Iterator[httpx.Client]:
    """The first platform admin, created on the command line, signed in."""
    made = cli(server, "users", "create", "root", "--admin", "--local", MODELHOST_PASSWORD=ROOT_PASSWORD)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["is_admin"] is True
    r = login(server, "root", ROOT_PASSWORD)
    assert r.status_code == 201, r.text
    with as_key(server, r.json()["key"]) as c:
        yield c


@pytest.fixture(scope="module")
def team(root: httpx.Client) -> str:
    r = root.post("/api/v1/projects", json={"name": "team"})
    assert r.status_code == 201 and r.json()["role"] == "admin", r.text
    return "team"


def make_user(root: httpx.Client, name: str, team: str | None = None, role: str = "member") -> None:
    assert root.post("/api/v1/users", json={"name": name, "password": PASSWORD}).status_code == 201
    if team:
        assert root.put(f"/api/v1/projects/{team}/members/{name}", json={"role": role}).status_code == 200


def test_the_first_admin_signs_in_to_every_project(server: Server, root: httpx.Client) -> None:
    r = login(server, "root", ROOT_PASSWORD)
    key = r.json()
    assert (key["project"], key["role"], key["user"], key["name"]) == (None, "admin", "root", "login")
    expires = dt.datetime.fromisoformat(key["expires_at"]) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=11, minutes=59) < expires <= dt.timedelta(hours=12)
    assert root.get("/api/v1/users").status_code == 200
    assert "default" in {p["name"] for p in root.get("/api/v1/projects").json()}


def test_no_self_sign_up_and_one_message_for_every_failed_sign_in(server: Server, root: httpx.Client) -> None:
    r = httpx.post(server.url + "/api/v1/users", json={"name": "me", "password": PASSWORD})
    assert r.status_code == 401
    wrong_password, no_user = login(server, "root", "not the password!"), login(server, "nobody", PASSWORD)
    assert wrong_password.status_code == no_user.status_code == 401
    assert wrong_password.json() == no_user.json()


def test_passwords_too_short_are_refused(server: Server, root: httpx.Client) -> None:
    r = root.post("/api/v1/users", json={"name": "shorty", "password": "elevenchars"})
    assert r.status_code == 400 and "at least 12" in r.json()["error"]["message"], r.text
    assert "elevenchars" not in r.text
    made = cli(server, "users", "create", "shorty", "--local", MODELHOST_PASSWORD="short")
    assert made.returncode == 1 and "at least 12" in made.stderr
    assert "shorty" not in {u["name"] for u in root.get("/api/v1/users").json()}


def test_creating_projects_and_users_needs_a_platform_admin(
    server: Server, root: httpx.Client, team: str
) -> None:
    make_user(root, "pat", team, "admin")
    with as_key(server, login(server, "pat", PASSWORD).json()["key"]) as pat:
        r = pat.post("/api/v1/projects", json={"name": "pats-own"})
        assert r.status_code == 403 and "platform admin" in r.json()["error"]["message"]
        assert pat.get("/api/v1/users").status_code == 403
        assert pat.post("/api/v1/users", json={"name": "x", "password": PASSWORD}).status_code == 403
        # a project admin manages the members of their project
        make_user(root, "quinn")
        assert pat.put(f"/api/v1/projects/{team}/members/quinn", json={"role": "viewer"}).status_code == 200
        members = {m["user"]: m["role"] for m in pat.get(f"/api/v1/projects/{team}/members").json()}
        assert members == {"root": "admin", "pat": "admin", "quinn": "viewer"}


def test_a_users_key_follows_their_role_in_the_project(server: Server, root: httpx.Client, team: str) -> None:
    make_user(root, "carol", team, "member")
    r = login(server, "carol", PASSWORD)  # her only project: no need to name it
    assert (r.json()["project"], r.json()["role"]) == (team, "member"), r.text
    with as_key(server, r.json()["key"]) as carol:
        made = carol.post("/api/v1/datasets/samples/iris", json={"name": "carols-iris"})
        assert made.status_code == 201 and made.json()["project"] == team
        assert root.put(f"/api/v1/projects/{team}/members/carol", json={"role": "viewer"}).status_code == 200
        r = carol.post("/api/v1/datasets/samples/wine", json={"name": "carols-wine"})
        assert r.status_code == 403 and "viewer" in r.json()["error"]["message"]
        assert carol.get("/api/v1/datasets/carols-iris").status_code == 200
        assert root.delete(f"/api/v1/projects/{team}/members/carol").status_code == 204
        assert carol.get("/api/v1/datasets").status_code == 401
    assert login(server, "carol", PASSWORD, team).status_code == 404


def test_signing_in_names_the_project_when_there_are_several(
    server: Server, root: httpx.Client, team: str
) -> None:
    make_user(root, "dana")
    r = login(server, "dana", PASSWORD)
    assert r.status_code == 400 and "none yet" in r.json()["error"]["message"]
    assert root.put("/api/v1/projects/default/members/dana", json={"role": "viewer"}).status_code == 200
    assert root.put(f"/api/v1/projects/{team}/members/dana", json={"role": "member"}).status_code == 200
    r = login(server, "dana", PASSWORD)
    assert r.status_code == 400 and "default, team" in r.json()["error"]["message"]
    r = login(server, "dana", PASSWORD, "default")
    assert (r.json()["project"], r.json()["role"]) == ("default", "viewer")


def test_a_disabled_user_can_neither_sign_in_nor_use_their_keys(
    server: Server, root: httpx.Client, team: str
) -> None:
    make_user(root, "erin", team)
    key = login(server, "erin", PASSWORD).json()["key"]
    with as_key(server, key) as erin:
        assert erin.get("/api/v1/models").status_code == 200
        r = root.post("/api/v1/users/erin/disable")
        assert r.status_code == 200 and r.json()["disabled_at"] is not None
        assert erin.get("/api/v1/models").status_code == 401
    assert login(server, "erin", PASSWORD).status_code == 401
    assert root.post("/api/v1/users/root/disable").status_code == 403  # not yourself


def test_failed_sign_ins_lock_the_user_name(server: Server, root: httpx.Client, team: str) -> None:
    make_user(root, "frank", team)
    make_user(root, "gina", team)
    for _ in range(5):
        assert login(server, "frank", "wrong password!").status_code == 401
    r = login(server, "frank", PASSWORD)  # the right one, while locked
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, r.text
    assert "try again" in r.json()["error"]["message"]
    assert login(server, "gina", PASSWORD).status_code == 201  # another user from the same address


def test_projects_are_deleted_only_when_empty(server: Server, root: httpx.Client) -> None:
    assert root.post("/api/v1/projects", json={"name": "scratch"}).status_code == 201
    assert root.post("/api/v1/projects", json={"name": "scratch"}).status_code == 409
    made = root.post(
        "/api/v1/datasets/samples/iris", params={"project": "scratch"}, json={"name": "scratch-iris"}
    )
    assert made.status_code == 201 and made.json()["project"] == "scratch"
    r = root.delete("/api/v1/projects/scratch")
    assert r.status_code == 409 and "datasets" in r.json()["error"]["message"]
    assert root.delete("/api/v1/datasets/scratch-iris").status_code == 204
    assert root.delete("/api/v1/projects/scratch").status_code == 204
    assert root.get("/api/v1/projects/scratch").status_code == 404
    assert root.delete("/api/v1/projects/default").status_code == 409


def test_keys_carry_their_scope_and_limits(server: Server, root: httpx.Client, team: str) -> None:
    body = {"name": "ci", "role": "viewer", "project": team, "rate_limit_rps": 5, "tokens_per_min": 600}
    r = root.post("/api/v1/keys", json={**body, "tokens_total": 10_000})
    assert r.status_code == 201, r.text
    created = r.json()
    assert (created["project"], created["role"], created["user"]) == (team, "viewer", "root")
    assert (created["rate_limit_rps"], created["tokens_per_min"], created["tokens_total"]) == (5, 600, 10_000)
    listed = {k["id"]: k for k in root.get("/api/v1/keys").json()}[created["id"]]
    assert listed["tokens_used"] == 0 and "key" not in listed and listed["prefix"] == created["key"][:8]
    r = root.post("/api/v1/keys", json={"name": "bad", "rate_limit_rps": 0})
    assert r.status_code == 400 and "rate_limit_rps" in r.json()["error"]["message"]


def test_the_cli_manages_users_projects_and_keys(server: Server, root: httpx.Client, team: str) -> None:
    key = root.headers["Authorization"].split()[1]
    made = cli(server, "projects", "create", "cli-proj", key=key)
    assert made.returncode == 0 and json.loads(made.stdout)["name"] == "cli-proj", made.stderr
    made = cli(server, "users", "create", "hank", key=key, MODELHOST_PASSWORD=PASSWORD)
    assert made.returncode == 0, made.stderr
    assert (
        cli(server, "projects", "add-member", "cli-proj", "hank", "--role", "viewer", key=key).returncode == 0
    )
    shown = json.loads(cli(server, "projects", "show", "cli-proj", key=key).stdout)
    assert {m["user"]: m["role"] for m in shown["members"]} == {"root": "admin", "hank": "viewer"}
    made = cli(server, "keys", "create", "hank-ci", "--project", "cli-proj", "--role", "viewer", key=key)
    assert made.returncode == 0 and json.loads(made.stdout)["project"] == "cli-proj", made.stderr
    listed = cli(server, "keys", "list", key=key).stdout
    assert "hank-ci" in listed and "cli-proj" in listed
    assert "cli-proj" in cli(server, "projects", "list", key=key).stdout
    assert cli(server, "users", "disable", "hank", key=key).returncode == 0
    assert login(server, "hank", PASSWORD).status_code == 401
    assert cli(server, "projects", "remove-member", "cli-proj", "hank", key=key).returncode == 0
    assert cli(server, "projects", "delete", "cli-proj", key=key).returncode == 0


def test_the_cli_signs_in_as_a_user_and_creates_in_a_named_project(
    server: Server, root: httpx.Client, team: str, tmp_path
) -> None:
    make_user(root, "ivy", team)
    env = {**server.env, "MODELHOST_HOME": str(tmp_path), "COLUMNS": "200"}
    env.pop("MODELHOST_API_KEY", None)
    mh = [sys.executable, "-m", "modelhost.cli"]
    signed = subprocess.run(
        [*mh, "login", "--url", server.url, "--user", "ivy", "--project", team],
        env=env, input=PASSWORD + "\n", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    profile = json.loads((tmp_path / "profile.json").read_text())
    assert profile["url"] == server.url and profile["api_key"].startswith("mh_")
    assert (tmp_path / "profile.json").stat().st_mode & 0o777 == 0o600
    made = subprocess.run(
        [*mh, "datasets", "sample", "iris", "--name", "ivy-iris", "--project", team],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["project"] == team
    wrong = subprocess.run(
        [*mh, "login", "--url", server.url, "--user", "ivy"],
        env=env, input="not the password\n", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert wrong.returncode == 1 and "password" in wrong.stderr.lower() + wrong.stdout.lower()
