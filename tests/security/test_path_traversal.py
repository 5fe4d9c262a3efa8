"""Attack item 3: path traversal in every name, id and path a user sends (the dozen MLflow CVEs).

Every route that takes a name — in the path, a form field or a JSON body — gets ``../``, ``..\\``,
absolute paths, URL-encoded and double-encoded dots, ``;`` smuggling, NUL, and names too long or
odd, for reading, writing and deleting. Each is refused with a 4xx; canary files planted beside
the home, in a sibling-prefix folder (``artifacts-evil``) and behind symlinks inside the artifacts
are never read, changed or deleted, and no file appears outside the artifacts root (the ``target``
fixture checks all of that when the module ends). The store itself is attacked too, below the API.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from modelhost.artifacts import open_artifacts
from modelhost.errors import InvalidInput, StorageError
from modelhost.names import NAME_PATTERN, check_name
from tests.security.support import CANARY_TEXT, CSV, Target, admin, raw_request, target, tiny_onnx
from tests.servers import ADMIN_KEY

pytestmark = pytest.mark.slow
__all__ = ["admin", "target"]  # fixtures, imported for pytest

TRAVERSALS = [
    "../canary.txt",
    "../../canary.txt",
    "../../../../../../etc/passwd",
    "..\\..\\canary.txt",
    "..",
    ".",
    "...",
    "/etc/passwd",
    "/tmp",
    "%2e%2e%2fcanary.txt",
    "%2e%2e%5ccanary.txt",
    "%252e%252e%252fcanary.txt",
    "..%2fcanary.txt",
    "..%c0%afcanary.txt",  # overlong UTF-8 '/'
    "ok;../canary.txt",
    "ok/../../canary.txt",
    "ok%00.csv",
    "ok\x00../canary.txt",
    "../artifacts-evil/canary.txt",
    "artifacts/../artifacts-evil",
    "~root",
    "$HOME",
    "a/b",
    "C:\\Windows",
    "\\\\server\\share",
    " spaced",
    "-leading-dash",
    ".hidden",
    "x" * 65,
    "\uff58",  # full-width x: not in the allow-list's ASCII
    "ok\r\nX-Injected: 1",
    "<script>",
]
"""Names no route may accept. The allow-list (modelhost/names.py) refuses each of them."""


def test_the_allow_list_refuses_every_traversal() -> None:
    for name in TRAVERSALS:
        with pytest.raises(InvalidInput, match="invalid dataset name"):
            check_name("dataset", name)
    assert NAME_PATTERN.startswith("^[A-Za-z0-9]")
    for name in ("digits", "digits-v2.1", "a", "A_b-c.d", "9" * 64, "artifacts-evil", "evil"):
        assert check_name("model", name) == name


def refused(r: httpx.Response, what: object) -> None:
    assert 400 <= r.status_code < 500, (what, r.status_code, r.text)
    assert CANARY_TEXT.decode() not in r.text and "root:x:0" not in r.text, what


def path_segment(name: str) -> str:
    """``name`` as one path segment; dots encoded too, or httpx would resolve ``.``/``..`` itself."""
    return quote(name, safe="").replace(".", "%2E")


def test_names_in_bodies_and_forms_are_refused_for_writes(target: Target, admin: httpx.Client) -> None:
    onnx_model = tiny_onnx()
    for name in TRAVERSALS:
        r = admin.post("/api/v1/datasets", data={"name": name}, files={"file": ("t.csv", CSV)})
        refused(r, ("dataset upload", name))
        if "\x00" not in name and "\r" not in name:  # form fields that reach the allow-list name it
            assert "invalid dataset name" in r.json()["error"]["message"], (name, r.text)
        refused(admin.post("/api/v1/datasets/samples/iris", json={"name": name}), ("sample", name))
        refused(admin.post("/api/v1/deployments", json={"name": name, "model": "m"}), ("deploy", name))
        refused(admin.post("/api/v1/keys", json={"name": name, "role": "viewer"}), ("key", name))
        spec = {"dataset": name, "target": "label", "model": {"architecture": "mlp"}, "epochs": 1}
        refused(admin.post("/api/v1/runs", json=spec), ("run dataset", name))
        spec = {**spec, "dataset": "table", "register_as": name}
        refused(admin.post("/api/v1/runs", json=spec), ("run register_as", name))
        r = admin.post(f"/api/v1/models/{path_segment(name)}/import", files={"file": ("m.onnx", onnx_model)})
        refused(r, ("import", name))
        tenancy_names_are_refused(admin, name)
    assert admin.get("/api/v1/datasets").json() == []
    assert admin.get("/api/v1/models").json() == []
    assert [p["name"] for p in admin.get("/api/v1/projects").json()] == ["default"]
    assert admin.get("/api/v1/users").json() == []
    assert target.artifact_files() == set()


def tenancy_names_are_refused(admin: httpx.Client, name: str) -> None:
    """Projects, users, keys' scopes, sign-in names, and the ``?project=`` of every create."""
    refused(admin.post("/api/v1/projects", json={"name": name}), ("project", name))
    refused(admin.post("/api/v1/users", json={"name": name, "password": "p" * 16}), ("user", name))
    for scope in ({"project": name}, {"deployment": name}):
        refused(admin.post("/api/v1/keys", json={"name": "k", **scope}), ("key scope", name))
    r = admin.post("/api/v1/login", json={"username": name, "password": "p" * 16})
    assert r.status_code in (400, 401, 429), (name, r.text)
    into = {"project": name}
    r = admin.post("/api/v1/datasets", params=into, data={"name": "ok"}, files={"file": ("t.csv", CSV)})
    refused(r, ("dataset into project", name))
    refused(admin.post("/api/v1/datasets/samples/iris", params=into), ("sample into project", name))
    refused(admin.post("/api/v1/deployments", params=into, json={"name": "ok", "model": "m"}), name)


@pytest.fixture(scope="module")
def resources(admin: httpx.Client) -> None:
    """One of each: a dataset ``table``, a model ``m`` with an alias ``prod``, a deployment ``d``."""
    r = admin.post("/api/v1/datasets", data={"name": "table"}, files={"file": ("t.csv", CSV)})
    assert r.status_code == 201, r.text
    r = admin.post("/api/v1/models/m/import", files={"file": ("m.onnx", tiny_onnx())})
    assert r.status_code == 201, r.text
    assert admin.put("/api/v1/models/m/aliases/prod", json={"version": 1}).status_code == 200
    r = admin.post("/api/v1/deployments", json={"name": "d", "model": "m", "version": 1})
    assert r.status_code == 201, r.text
    # the first call that starts the deployment's batchers is a metadata read (was a 500: it ran
    # in a worker thread, where the batcher found no event loop)
    r = admin.get("/v2/models/d/versions/1")
    assert r.status_code == 200 and r.json()["inputs"][0]["name"] == "x", r.text


ROUTES = [  # (method, path with {n} for the name, JSON body)
    ("GET", "/api/v1/datasets/{n}", None),
    ("DELETE", "/api/v1/datasets/{n}", None),
    ("POST", "/api/v1/datasets/samples/{n}", None),
    ("GET", "/api/v1/models/{n}", None),
    ("DELETE", "/api/v1/models/{n}", None),
    ("GET", "/api/v1/models/{n}/versions", None),
    ("GET", "/api/v1/models/{n}/versions/1", None),
    ("GET", "/api/v1/models/{n}/aliases", None),
    ("PUT", "/api/v1/models/{n}/aliases/prod", {"version": 1}),
    ("PUT", "/api/v1/models/m/aliases/{n}", {"version": 1}),
    ("DELETE", "/api/v1/models/m/aliases/{n}", None),
    ("DELETE", "/api/v1/models/{n}/aliases/prod", None),
    ("GET", "/api/v1/deployments/{n}", None),
    ("PUT", "/api/v1/deployments/{n}", {"model": "m", "version": 1}),
    ("PUT", "/api/v1/deployments/x", {"model": "{n}", "version": 1}),
    ("PUT", "/api/v1/deployments/x", {"model": "m", "version": "{n}"}),
    ("POST", "/api/v1/deployments/{n}/rollback", None),
    ("DELETE", "/api/v1/deployments/{n}", None),
    ("GET", "/api/v1/runs/{n}", None),
    ("GET", "/api/v1/runs/{n}/logs", None),
    ("POST", "/api/v1/runs/{n}/cancel", None),
    ("GET", "/api/v1/sweeps/{n}", None),
    ("DELETE", "/api/v1/keys/{n}", None),
    ("GET", "/api/v1/projects/{n}", None),
    ("DELETE", "/api/v1/projects/{n}", None),
    ("GET", "/api/v1/projects/{n}/members", None),
    ("PUT", "/api/v1/projects/default/members/{n}", {"role": "viewer"}),
    ("DELETE", "/api/v1/projects/default/members/{n}", None),
    ("POST", "/api/v1/users/{n}/disable", None),
    ("POST", "/v1/models/{n}:predict", {"instances": [[1.0, 2.0]]}),
    ("GET", "/v2/models/{n}", None),
    ("GET", "/v2/models/{n}/ready", None),
    ("POST", "/v2/models/{n}/infer", {"inputs": []}),
    ("GET", "/v2/models/d/versions/{n}", None),
    ("POST", "/v2/models/d/versions/{n}/infer", {"inputs": []}),
    ("GET", "/v1/models/{n}", None),
    ("POST", "/v1/embeddings", {"model": "{n}", "input": "hi"}),
    ("POST", "/v1/completions", {"model": "{n}", "prompt": "hi"}),
    ("POST", "/v1/chat/completions", {"model": "{n}", "messages": [{"role": "user", "content": "hi"}]}),
]


def fill(body: object, name: str) -> object:
    return json.loads(json.dumps(body).replace('"{n}"', json.dumps(name)))


@pytest.mark.usefixtures("resources")
def test_names_in_paths_are_refused_for_reads_writes_and_deletes(target: Target, admin: httpx.Client) -> None:
    for method, template, body in ROUTES:
        for name in TRAVERSALS:
            path = template.replace("{n}", path_segment(name))
            refused(admin.request(method, path, json=fill(body, name)), (method, template, name))
    # what was there is untouched: nothing was deleted through a crafted name
    assert [d["name"] for d in admin.get("/api/v1/datasets").json()] == ["table"]
    assert admin.get("/api/v1/models/m/aliases").json() == {"prod": 1}
    assert admin.get("/api/v1/deployments/d").status_code == 200
    assert [p["name"] for p in admin.get("/api/v1/projects").json()] == ["default"]


@pytest.mark.usefixtures("resources")
def test_raw_undecoded_paths_are_refused(target: Target) -> None:
    """Paths as a client could put them on the wire (httpx would normalise the dots away)."""
    auth = f"Authorization: Bearer {ADMIN_KEY}".encode()
    raw = [
        "/api/v1/datasets/../../../canary.txt",
        "/api/v1/datasets/..%2f..%2f..%2fcanary.txt",
        "/api/v1/datasets/%2e%2e/%2e%2e/canary.txt",
        "/api/v1/datasets/%252e%252e%252fcanary.txt",
        "/api/v1/datasets/table/../../../../canary.txt",
        "/api/v1/datasets/table;/../../canary.txt",
        "/api/v1/models/m/versions/1/../../../../../canary.txt",
        "/api/v1/models/..%5c..%5ccanary.txt",
        "/v2/models/..%2f..%2fcanary.txt/ready",
        f"/api/v1/datasets/{quote(str(target.tmp / 'canary.txt'), safe='')}",
    ]
    for path in raw:
        for method in ("GET", "DELETE"):
            head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode() + auth
            status, answer = raw_request(target.url, head)
            assert 400 <= status < 500, (method, path, answer[:300])
            assert CANARY_TEXT not in answer


def test_run_ids_are_numbers_only(target: Target, admin: httpx.Client) -> None:
    for run_id in ["0", "-1", "1.5", "1e3", "99999999999999999999", "1;DROP", "1%2f..", "0x10"]:
        for path in ("/api/v1/runs/{}", "/api/v1/runs/{}/metrics", "/api/v1/runs/{}/resume"):
            method = "POST" if path.endswith("resume") else "GET"
            r = admin.request(method, path.format(run_id))
            assert r.status_code in (400, 404), (path, run_id, r.status_code, r.text)


def test_upload_filenames_never_become_paths(target: Target, admin: httpx.Client) -> None:
    """A file's name only tells its format: traversal in it is refused or ignored, never followed."""
    names = ["../../canary.csv", "/tmp/evil.csv", "..\\..\\evil.csv", "a/../../b.csv", "evil\x00.csv"]
    for i, filename in enumerate(names):
        r = admin.post("/api/v1/datasets", data={"name": f"f{i}"}, files={"file": (filename, CSV)})
        assert r.status_code in (201, 400), (filename, r.text)
        r = admin.post(f"/api/v1/models/fm{i}/import", files={"file": (filename[:-4] + ".onnx", tiny_onnx())})
        assert r.status_code in (201, 400), (filename, r.text)
    assert not (target.tmp / "canary.csv").exists() and not Path("/tmp/evil.csv").exists()
    stray = [f for f in target.artifact_files() if not f.startswith(("datasets/", "models/"))]
    assert stray == []


def test_symlinks_inside_the_artifacts_are_not_followed(target: Target, admin: httpx.Client) -> None:
    """models/evil -> the folder above the home, models/sibling -> artifacts-evil: a model of
    either name would be written through the link; the store refuses and nothing lands there."""
    for name in ("evil", "sibling"):
        r = admin.post(f"/api/v1/models/{name}/import", files={"file": ("m.onnx", tiny_onnx())})
        assert r.status_code >= 400, r.text
        assert r.json()["error"]["type"] == "storage_error" and "outside" in r.json()["error"]["message"]
        assert str(target.tmp) not in r.text  # the key is named, never the server's paths
        versions = admin.get(f"/api/v1/models/{name}/versions")
        assert versions.status_code == 404 or versions.json() == [], versions.text
    assert sorted(os.listdir(target.home / "artifacts-evil")) == ["canary.txt"]


# --- the store below the API: the same attacks on keys, and symlinks planted on disk


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path]:
    """A store root ``artifacts`` beside ``artifacts-evil``, which holds an object (data and
    sidecar) that symlinks inside the root point at."""
    root, evil = tmp_path / "artifacts", tmp_path / "artifacts-evil"
    store = open_artifacts(root.as_uri())
    store.put("a/secret", b"top secret")
    evil.mkdir()
    for f in (root / "a").iterdir():
        os.replace(f, evil / f.name)
    os.symlink(evil / "secret", root / "a" / "secret")  # the object itself is a link
    os.symlink(evil / "secret.sha256.json", root / "a" / "secret.sha256.json")
    os.symlink(evil, root / "linked")  # a folder that is a link
    return root, evil


def test_store_refuses_traversal_keys(tmp_path: Path) -> None:
    store = open_artifacts((tmp_path / "artifacts").as_uri())
    (tmp_path / "canary.txt").write_bytes(CANARY_TEXT)
    keys = [k for k in TRAVERSALS if k not in ("a/b", "x" * 65)]  # those two are fine keys
    for key in [*keys, "a//b", "a/", "/a", "a/./b", "a/.tmp-x", "a/b.sha256.json"]:
        for op in (store.get, store.exists, store.delete, store.digest, lambda k: store.put(k, b"x")):
            with pytest.raises(InvalidInput, match="invalid artifact key"):
                op(key)
    assert (tmp_path / "canary.txt").read_bytes() == CANARY_TEXT
    assert store.list() == []


def test_store_refuses_symlinks_to_a_sibling_prefix_folder(planted: tuple[Path, Path]) -> None:
    root, evil = planted
    store = open_artifacts(root.as_uri())
    for op in (store.get, store.digest, store.delete, lambda k: store.put(k, b"overwritten")):
        with pytest.raises(StorageError, match="outside the store root"):
            op("a/secret")
    with pytest.raises(StorageError, match="outside the store root"):
        store.put("linked/new", b"x")
    assert store.list() == [] and store.list("a/") == []
    assert store.delete_prefix("a/") == 0
    with pytest.raises(StorageError, match="outside the store root"):
        store.delete_prefix("linked/")
    assert sorted(os.listdir(evil)) == ["secret", "secret.sha256.json"]
    assert (evil / "secret").read_bytes() == b"top secret"
