"""Runs that end badly: cancelled mid-training, workers killed with SIGKILL, bad data.
Each ends in the store with the right status and a reason, never hung."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from tests.servers import ADMIN_KEY, Server

pytestmark = pytest.mark.slow
SLOW_SPEC = {"dataset": "wine-lc", "epochs": 100_000, "batch_size": 1, "register_as": "never"}


@pytest.fixture(scope="module")
def http(server: Server) -> httpx.Client:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as c:
        if c.get("/api/v1/datasets/wine-lc").status_code == 404:
            assert c.post("/api/v1/datasets/samples/wine", json={"name": "wine-lc"}).status_code == 201
        yield c


def wait_for(http: httpx.Client, run_id: int, predicate, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while not predicate(run := http.get(f"/api/v1/runs/{run_id}").json()):
        assert time.monotonic() < deadline, f"run {run_id} stuck: {run}"
        time.sleep(0.1)
    return run


def test_cancel_stops_a_running_run_within_seconds(http: httpx.Client) -> None:
    run_id = http.post("/api/v1/runs", json=SLOW_SPEC).json()["id"]
    wait_for(http, run_id, lambda r: r["status"] == "running" and r["step"] > 0)
    assert http.post(f"/api/v1/runs/{run_id}/cancel").json()["cancel_requested"] is True
    run = wait_for(http, run_id, lambda r: r["status"] != "running", timeout=10)  # "within seconds"
    assert run["status"] == "cancelled"
    assert run["error"] is None and run["version_id"] is None
    assert http.post(f"/api/v1/runs/{run_id}/cancel").status_code == 409


def test_a_run_whose_worker_is_killed_every_attempt_fails_with_a_reason(http: httpx.Client) -> None:
    run_id = http.post("/api/v1/runs", json=SLOW_SPEC).json()["id"]
    pids = []
    for attempt in (1, 2, 3):  # each kill hands the run to a new worker, up to 3 attempts
        run = wait_for(http, run_id, lambda r, n=attempt: r["status"] == "running" and r["attempt"] == n)
        pids.append(run["worker_pid"])
        os.kill(run["worker_pid"], signal.SIGKILL)
    run = wait_for(http, run_id, lambda r: r["status"] not in ("queued", "running"), timeout=10)
    assert run["status"] == "failed" and run["error"].startswith("worker lost 3 times; last seen ")
    assert f"(worker process {pids[-1]} on " in run["error"] and run["error"].endswith(" is gone)")
    assert len(set(pids)) == 3


def test_diverging_loss_fails_the_run_naming_the_cause(http: httpx.Client) -> None:
    spec = {
        "dataset": "wine-lc",
        "task": "regression",
        "target": "alcohol",
        "preprocessing": "none",
        "optimizer": {"name": "sgd", "lr": 10},
        "epochs": 50,
        "register_as": "diverge",
    }
    run_id = http.post("/api/v1/runs", json=spec).json()["id"]
    run = wait_for(http, run_id, lambda r: r["status"] not in ("queued", "running"))
    assert run["status"] == "failed" and "lower optimizer.lr" in run["error"]


def test_spec_checked_against_the_dataset_before_queueing(http: httpx.Client) -> None:
    r = http.post("/api/v1/runs", json={"dataset": "wine-lc", "target": "colour"})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith(
        "target: column 'colour' is not in dataset 'wine-lc'; it has"
    )
    r = http.post("/api/v1/runs", json={"dataset": "wine-lc", "features": ["label"]})
    assert r.status_code == 400 and "features: 'label' is the target" in r.json()["error"]["message"]
