"""The training engine through the real server and its workers: a cancelled run resumed from
its checkpoint ends with the weights of the same run never stopped; a sweep runs every trial
and names the best; runs compare side by side; a 2-process data-parallel run succeeds."""

from __future__ import annotations

import httpx
import pytest
import torch
from safetensors.torch import load
from sklearn.datasets import load_digits

from modelhost.artifacts import open_artifacts
from modelhost.datasets.formats import to_csv
from modelhost.db import Database
from modelhost.registry.manifest import WEIGHTS_FILE
from modelhost.registry.service import get_version, read_version_file
from tests.e2e.conftest import DIGITS_SPEC
from tests.e2e.test_cli_flow import cli
from tests.e2e.test_runs_lifecycle import wait_for
from tests.servers import Server

pytestmark = pytest.mark.slow


def finished(http: httpx.Client, run_id: int, timeout: float = 240) -> dict:
    return wait_for(http, run_id, lambda r: r["status"] not in ("queued", "running"), timeout=timeout)


def weights(server: Server, model: str) -> dict[str, torch.Tensor]:
    db = Database(f"sqlite:///{server.home / 'modelhost.db'}")
    try:
        with db.session() as s:
            version = get_version(s, model, 1)
            return load(
                read_version_file(
                    s, open_artifacts((server.home / "artifacts").as_uri()), version, WEIGHTS_FILE
                )
            )
    finally:
        db.dispose()


@pytest.fixture(scope="module")
def digits(http: httpx.Client, digits_split) -> str:
    r = http.post(
        "/api/v1/datasets", data={"name": "digits-upload"}, files={"file": ("digits.csv", digits_split[0])}
    )
    assert r.status_code == 201, r.text
    return "digits-upload"


def test_a_cancelled_run_resumes_to_the_weights_of_a_run_never_stopped(http, server, digits) -> None:
    spec = {
        **DIGITS_SPEC,
        # long enough (456 steps) that a cancel sent at step 25 lands mid-run on a fast machine;
        # with 114 steps a quiet machine had finished them all before the cancel was seen
        "epochs": 24,
        "model": {"architecture": "mlp", "hidden_sizes": [64], "dropout": 0.1},
        "schedule": {"name": "cosine", "warmup_steps": 10},
        "checkpoint_every": 7,
    }
    straight = http.post("/api/v1/runs", json={**spec, "register_as": "straight"}).json()["id"]
    assert finished(http, straight)["status"] == "succeeded"

    stopped = http.post("/api/v1/runs", json={**spec, "register_as": "stopped"}).json()["id"]
    wait_for(http, stopped, lambda r: r["status"] == "running" and r["step"] >= 25, timeout=120)
    assert http.post(f"/api/v1/runs/{stopped}/cancel").status_code == 200
    run = finished(http, stopped, timeout=30)
    assert run["status"] == "cancelled" and run["step"] < run["total_steps"]

    r = http.post(f"/api/v1/runs/{stopped}/resume")
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert finished(http, stopped)["status"] == "succeeded"
    lines = [e["line"] for e in http.get(f"/api/v1/runs/{stopped}/logs").json()]
    assert any(line.startswith("resumed from the checkpoint at step ") for line in lines), lines

    a, b = weights(server, "straight"), weights(server, "stopped")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    r = http.post(f"/api/v1/runs/{stopped}/resume")
    assert r.status_code == 409 and "only cancelled and failed runs resume" in r.json()["error"]["message"]


def test_a_sweep_runs_every_trial_names_the_best_and_runs_compare(http, server, digits) -> None:
    document = {
        **DIGITS_SPEC,
        "epochs": 3,
        "register_as": "digits-sweep",
        "sweep": {
            "method": "grid",
            "metric": "val_accuracy",
            "space": {"optimizer.lr": [0.0003, 0.01], "model.hidden_sizes": [[16], [64]]},
        },
    }
    r = http.post("/api/v1/sweeps", json=document)
    assert r.status_code == 201, r.text
    sweep_id, runs = r.json()["sweep"]["id"], r.json()["runs"]
    assert len(runs) == 4
    for run in runs:
        assert finished(http, run["id"])["status"] == "succeeded"
    sweep = http.get(f"/api/v1/sweeps/{sweep_id}").json()
    values = {t["run_id"]: t["value"] for t in sweep["trials"]}
    assert all(0 < v <= 1 for v in values.values())
    assert sweep["best_run_id"] == max(values, key=values.__getitem__)
    assert {tuple(t["params"]["model.hidden_sizes"]) for t in sweep["trials"]} == {(16,), (64,)}

    a, b = runs[0]["id"], runs[3]["id"]  # lr and width both differ
    c = http.get("/api/v1/runs/compare", params={"ids": [a, b]}).json()
    assert {"optimizer.lr", "model.hidden_sizes"} <= set(c["params"])
    assert "val_accuracy" in c["metrics"] and [r["id"] for r in c["runs"]] == [a, b]
    assert c["runs"][0]["params"]["optimizer.lr"] == 0.0003

    out = cli(server, "runs", "compare", str(a), str(b)).stdout
    assert "optimizer.lr" in out and "val_accuracy" in out
    assert f"best: run {sweep['best_run_id']}" in cli(server, "sweeps", "show", str(sweep_id)).stdout

    bad = http.post("/api/v1/sweeps", json={**document, "sweep": {"space": {"optimizer.lr": [0.01, -1]}}})
    assert bad.status_code == 400 and "sweep trial 2" in bad.json()["error"]["message"]
    assert len(http.get("/api/v1/sweeps").json()) == 1  # the refused sweep queued nothing
    r = http.get("/api/v1/runs/compare", params={"ids": [a]})
    assert r.status_code == 400


def test_a_two_process_data_parallel_run_succeeds(http, digits) -> None:
    spec = {**DIGITS_SPEC, "epochs": 4, "world_size": 2, "register_as": "digits-ddp"}
    run = finished(http, http.post("/api/v1/runs", json=spec).json()["id"])
    assert run["status"] == "succeeded", run["error"]
    lines = [e["line"] for e in http.get(f"/api/v1/runs/{run['id']}/logs").json()]
    assert any(line.startswith("data parallel: 2 processes") for line in lines)
    version = http.get("/api/v1/models/digits-ddp/versions/1").json()
    assert version["manifest"]["metrics"]["val_accuracy"] > 0.85


def test_a_given_test_dataset_is_used_whole_and_scored(http, digits) -> None:
    d = load_digits()
    rows = [[*map(int, x), int(y)] for x, y in zip(d.data[:300], d.target[:300], strict=True)]
    held_out = to_csv([f"px{i}" for i in range(64)] + ["digit"], rows)
    r = http.post("/api/v1/datasets", data={"name": "digits-held-out"}, files={"file": ("t.csv", held_out)})
    assert r.status_code == 201, r.text
    spec = {
        **DIGITS_SPEC,
        "epochs": 5,
        "register_as": "digits-given",
        "split": {"test_dataset": "digits-held-out"},
    }
    run = finished(http, http.post("/api/v1/runs", json=spec).json()["id"])
    assert run["status"] == "succeeded", run["error"]
    manifest = http.get("/api/v1/models/digits-given/versions/1").json()["manifest"]
    assert manifest["metrics"]["test_accuracy"] > 0.85
    assert sum(map(sum, manifest["confusion_matrix"])) == 300  # every held-out image, scored once
    assert http.post("/api/v1/datasets/samples/classics", json={}).status_code == 201
    bad = http.post("/api/v1/runs", json={**spec, "split": {"test_dataset": "classics"}})
    assert bad.status_code == 400 and "split.test_dataset: dataset 'classics' is not table" in bad.text


def test_runs_metrics_and_logs_follow_until_the_run_ends(http, server, digits) -> None:
    run_id = http.post("/api/v1/runs", json={**DIGITS_SPEC, "epochs": 3, "register_as": "followed"}).json()[
        "id"
    ]
    metrics = cli(server, "runs", "metrics", str(run_id), "--follow", "--key", "val_accuracy").stdout
    assert [line.split()[:4] for line in metrics.splitlines()] == [
        ["step", str(19 * e), "epoch", str(e)] for e in (1, 2, 3)
    ]
    assert http.get(f"/api/v1/runs/{run_id}").json()["status"] == "succeeded"  # it ran to the end
    logs = cli(server, "runs", "logs", str(run_id), "-f").stdout
    assert "registered 'followed' version 1" in logs.splitlines()[-1]
