"""A small platform built through the HTTP API, and snapshots of it to compare two servers by.

Used by the backup/restore and key-rotation tests: a dataset, a finished run, a registered
version and a deployment, all on the iris sample (seconds to train).
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import httpx

from tests.servers import Server

FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]  # setosa, virginica, versicolor
MARKER_CSV = b"note,x,label\nMARKER-5b1e-in-a-dataset,1.0,0\nMARKER-5b1e-in-a-dataset,2.0,1\n"


def train(http: httpx.Client, **spec: Any) -> dict[str, Any]:
    """Start a run and wait for it; it must succeed."""
    r = http.post("/api/v1/runs", json=spec)
    assert r.status_code == 201, r.text
    return wait_for_run(http, r.json()["id"])


def wait_for_run(http: httpx.Client, run_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while (run := http.get(f"/api/v1/runs/{run_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"run still {run['status']}"
        time.sleep(0.2)
    assert run["status"] == "succeeded", run["error"]
    return run


def build_platform(http: httpx.Client) -> list[Any]:
    """Dataset ``iris`` (plus ``notes``, a CSV with a marker string), run, version 1 of ``iris``,
    deployment ``iris``. Returns the deployment's predictions for FLOWERS."""
    assert http.post("/api/v1/datasets/samples/iris", json={}).status_code == 201
    r = http.post(
        "/api/v1/datasets", data={"name": "notes"}, files={"file": ("notes.csv", MARKER_CSV, "text/csv")}
    )
    assert r.status_code == 201, r.text
    train(http, dataset="iris", epochs=40, seed=3)
    r = http.put("/api/v1/deployments/iris", json={"model": "iris"})
    assert r.status_code == 201 and r.json()["state"] == "ready", r.text
    return predict(http)


def predict(http: httpx.Client, name: str = "iris") -> list[Any]:
    r = http.post(f"/v1/models/{name}:predict", json={"instances": FLOWERS})
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


def snapshot(http: httpx.Client) -> dict[str, Any]:
    """What a restored platform must show again: every dataset, run, version and deployment."""

    def strip(items: list[dict[str, Any]], *volatile: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in item.items() if k not in volatile} for item in items]

    models = http.get("/api/v1/models").json()
    return {
        "datasets": http.get("/api/v1/datasets").json(),
        "runs": strip(http.get("/api/v1/runs").json(), "worker", "heartbeat_at", "lease_expires_at"),
        "models": models,
        "versions": {m["name"]: http.get(f"/api/v1/models/{m['name']}/versions").json() for m in models},
        "deployments": strip(http.get("/api/v1/deployments").json(), "replicas", "stats", "queue_depth"),
    }


def cli(server_env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``modelhost ARGS`` with a server's settings (its home, stores and keys)."""
    done = subprocess.run(
        [sys.executable, "-m", "modelhost.cli", *args],
        env={**server_env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def client(server: Server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
