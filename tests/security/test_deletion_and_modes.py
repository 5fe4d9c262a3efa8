"""Deleting a dataset or a model removes its bytes from the artifact store (local files and
S3), and every file and folder a real server creates in its home is private (0600 / 0700).

The bytes are searched for, not just the keys listed: a test first finds its unique content
in the store, deletes through the API, then finds it nowhere.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from modelhost.client import Client
from tests.conftest import S3_CREDENTIALS
from tests.security.small_model import TINY, deploy_tiny
from tests.servers import ADMIN_KEY, Server, start_server
from tests.unit.test_onnx_runtime import tiny_graph

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def canary_csv() -> tuple[bytes, bytes]:
    """A CSV whose bytes hold a marker found nowhere else; returns (csv, marker)."""
    marker = f"canary{uuid.uuid4().hex}".encode()
    rows = b"".join(b"%d,%d,%s\n" % (i, i % 2, marker) for i in range(50))
    return b"x,label,note\n" + rows, marker


def upload(http: httpx.Client, name: str, csv: bytes) -> None:
    files = {"file": (f"{name}.csv", csv, "text/csv")}
    r = http.post("/api/v1/datasets", data={"name": name, "target": "label"}, files=files)
    assert r.status_code == 201, r.text


def local_holders(root: Path, needle: bytes) -> list[str]:
    """Files under ``root`` whose bytes contain ``needle``."""
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("private") / "home")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
        yield c


# --- deletion, local files


def test_deleting_a_dataset_removes_its_bytes(server: Server, http: httpx.Client) -> None:
    csv, marker = canary_csv()
    upload(http, "doomed", csv)
    artifacts = server.home / "artifacts"
    [held] = local_holders(artifacts, marker)
    assert held.startswith("datasets/") and held.endswith("/data.csv")
    assert http.delete("/api/v1/datasets/doomed").status_code == 204
    assert local_holders(artifacts, marker) == []
    assert not (artifacts / held).parent.exists()  # the folder goes too, sidecar and all
    assert http.get("/api/v1/datasets/doomed").status_code == 404


def test_deleting_a_model_removes_every_version(server: Server, http: httpx.Client, tmp_path: Path) -> None:
    graph = tiny_graph()
    deploy_tiny(server.url, http, tmp_path)
    artifacts = server.home / "artifacts"
    held = local_holders(artifacts, graph)
    assert held and all(h.startswith(f"models/{TINY}/") for h in held)
    r = http.delete(f"/api/v1/models/{TINY}")
    assert r.status_code == 409, "a deployed model must not lose its files"
    assert local_holders(artifacts, graph) == held
    assert http.delete(f"/api/v1/deployments/{TINY}").status_code == 204
    assert http.delete(f"/api/v1/models/{TINY}").status_code == 204
    assert local_holders(artifacts, graph) == []
    assert not (artifacts / "models" / TINY).exists() or not any((artifacts / "models" / TINY).rglob("*"))
    assert http.get(f"/api/v1/models/{TINY}").status_code == 404


# --- deletion, S3


@pytest.fixture
def s3_server(tmp_path: Path, moto_endpoint: str) -> Iterator[tuple[Server, str]]:
    bucket = f"mh-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, **S3_CREDENTIALS).create_bucket(Bucket=bucket)
    srv = start_server(
        tmp_path / "home",
        MODELHOST_ARTIFACTS_URL=f"s3://{bucket}/team",
        MODELHOST_S3_ENDPOINT_URL=moto_endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    yield srv, bucket
    srv.stop()


def s3_holders(endpoint: str, bucket: str, needle: bytes) -> list[str]:
    """Keys of every object in ``bucket`` (whatever the prefix) whose bytes contain ``needle``."""
    s3 = boto3.client("s3", endpoint_url=endpoint, **S3_CREDENTIALS)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return [k for k in keys if needle in s3.get_object(Bucket=bucket, Key=k)["Body"].read()]


def test_deleting_on_s3_removes_the_objects(
    s3_server: tuple[Server, str], moto_endpoint: str, tmp_path: Path
) -> None:
    server, bucket = s3_server
    csv, marker = canary_csv()
    graph = tiny_graph()
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
        upload(http, "doomed", csv)
        deploy_tiny(server.url, http, tmp_path)
        [held] = s3_holders(moto_endpoint, bucket, marker)
        assert held.startswith("team/datasets/")
        assert s3_holders(moto_endpoint, bucket, graph)
        assert http.delete("/api/v1/datasets/doomed").status_code == 204
        assert http.delete(f"/api/v1/deployments/{TINY}").status_code == 204
        assert http.delete(f"/api/v1/models/{TINY}").status_code == 204
    assert s3_holders(moto_endpoint, bucket, marker) == []
    assert s3_holders(moto_endpoint, bucket, graph) == []
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, **S3_CREDENTIALS)
    left = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert [k for k in left if k.startswith(("team/datasets/", f"team/models/{TINY}/"))] == []


# --- file modes after a whole lifecycle


def test_everything_in_the_home_is_private(server: Server, http: httpx.Client, tmp_path: Path) -> None:
    csv, _ = canary_csv()
    upload(http, "kept", csv)
    assert http.post("/api/v1/datasets/samples/iris", json={}).status_code == 201
    with Client(server.url, ADMIN_KEY) as client:
        run = client.wait_run(
            client.train({"dataset": "iris", "epochs": 3, "checkpoint_every": 1})["id"], 180
        )
    assert run["status"] == "succeeded", run["error"]
    r = http.put("/api/v1/deployments/iris", json={"model": "iris"})
    assert r.status_code == 201 and r.json()["state"] == "ready", r.text
    r = http.post("/v1/models/iris:predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
    assert r.status_code == 200, r.text
    login = subprocess.run(
        [sys.executable, "-m", "modelhost.cli", "login", "--url", server.url, "--api-key", ADMIN_KEY],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert login.returncode == 0, login.stderr
    home = server.home
    created = {p.relative_to(home).as_posix() for p in home.rglob("*")}
    for expected in ("modelhost.db", "profile.json", "logs/run-1.log", "artifacts/datasets"):
        assert expected in created
    assert any(c.startswith("artifacts/models/iris/") and c.endswith("weights.safetensors") for c in created)
    assert any(c.startswith("modelhost.db-") for c in created), "SQLite's WAL files are covered too"
    loose = {
        f"{p.relative_to(home)} {stat.filemode(p.lstat().st_mode)}"
        for p in [home, *home.rglob("*")]
        if p.lstat().st_mode & 0o077
    }
    assert loose == set(), "group or others may use these"
    assert stat.S_IMODE(os.stat(home / "profile.json").st_mode) == 0o600
