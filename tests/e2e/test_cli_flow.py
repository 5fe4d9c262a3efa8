"""The same lifecycle through the `modelhost` CLI, each command a real subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from tests.e2e.conftest import DIGITS_SPEC
from tests.servers import ADMIN_KEY, Server

pytestmark = pytest.mark.slow


def cli(
    server: Server, *args: str, env: dict[str, str] | None = None, ok: bool = True
) -> subprocess.CompletedProcess:
    base = (
        env
        if env is not None
        else {**server.env, "MODELHOST_URL": server.url, "MODELHOST_API_KEY": ADMIN_KEY}
    )
    proc = subprocess.run(
        [sys.executable, "-m", "modelhost.cli", *args],
        env={**base, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if ok:
        assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
    return proc


def test_cli_lifecycle(server: Server, digits_split, tmp_path: Path) -> None:
    csv, x_test, y_test = digits_split
    (tmp_path / "digits.csv").write_bytes(csv)
    spec = {**DIGITS_SPEC, "dataset": "digits-cli", "register_as": "digits-cli"}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))

    shown = json.loads(
        cli(server, "datasets", "upload", str(tmp_path / "digits.csv"), "--name", "digits-cli").stdout
    )
    assert shown["name"] == "digits-cli" and shown["num_rows"] == 1497
    assert "digits-cli" in cli(server, "datasets", "list").stdout

    trained = cli(server, "train", str(tmp_path / "spec.yaml"))
    assert "succeeded" in trained.stdout and "registered 'digits-cli'" in trained.stdout
    run_id = int(trained.stdout.split("run ", 1)[1].split()[0])
    run = json.loads(cli(server, "runs", "show", str(run_id)).stdout)
    assert run["status"] == "succeeded" and run["version_id"] is not None
    row = next(line for line in cli(server, "runs", "list").stdout.splitlines() if f"│ {run_id} " in line)
    assert "succeeded" in row and "digits-cli" in row
    metrics = cli(server, "runs", "metrics", str(run_id)).stdout
    assert sum("val_accuracy" in line for line in metrics.splitlines()) == 15  # one per epoch
    assert "registered 'digits-cli' version 1" in cli(server, "runs", "logs", str(run_id)).stdout

    row = next(line for line in cli(server, "models", "list").stdout.splitlines() if "digits-cli" in line)
    assert "classification" in row and "│ 1 " in row
    model = json.loads(cli(server, "models", "show", "digits-cli").stdout)
    assert model["latest_version"] == 1 and model["versions"][0]["number"] == 1

    deployed = cli(server, "deploy", "digits-cli", "--model", "digits-cli")
    assert "deployment 'digits-cli' -> digits-cli v1 100: ready" in deployed.stdout
    split = cli(
        server,
        "deploy",
        "digits-cli",
        "--model",
        "digits-cli",
        "--traffic",
        "1=90",
        "--shadow",
        "1",
        ok=False,
    )
    assert split.returncode == 1 and "shadow version 1 also takes live traffic" in split.stderr
    rolled = cli(server, "deployments", "rollback", "digits-cli", ok=False)
    assert rolled.returncode == 1 and "no earlier state to roll back to" in rolled.stderr
    body = json.dumps({"instances": x_test[:100].tolist()})
    predictions = json.loads(cli(server, "predict", "digits-cli", "--json", body).stdout)["predictions"]
    assert (np.array(predictions) == y_test[:100]).mean() >= 0.9


def test_cli_login_profile_is_used_without_env(server: Server, tmp_path: Path) -> None:
    env = {**server.env, "MODELHOST_HOME": str(tmp_path / "cli-home")}
    cli(server, "login", "--url", server.url, "--api-key", ADMIN_KEY, env=env)
    profile = tmp_path / "cli-home" / "profile.json"
    assert profile.stat().st_mode & 0o777 == 0o600
    assert json.loads(profile.read_text()) == {"url": server.url, "api_key": ADMIN_KEY}
    listed = cli(server, "keys", "list", env=env).stdout
    assert "admin" in listed and ADMIN_KEY[:8] in listed  # the key's visible prefix, found via the profile


def test_cli_errors_are_one_clear_line(server: Server, tmp_path: Path) -> None:
    bad = cli(server, "predict", "nope", "--json", '{"instances": [[1]]}', ok=False)
    assert (
        bad.returncode == 1 and "deployment 'nope' not found" in bad.stderr and "Traceback" not in bad.stderr
    )
    (tmp_path / "bad.yaml").write_text("dataset: x\nepochs: -1\n")
    bad = cli(server, "train", str(tmp_path / "bad.yaml"), ok=False)
    assert bad.returncode == 1 and "epochs" in bad.stderr and "Traceback" not in bad.stderr
    wrong = {
        **server.env,
        "MODELHOST_URL": server.url,
        "MODELHOST_API_KEY": "mh_wrong_key_wrong_key_wrong_key_wrong",
    }
    denied = cli(server, "models", "list", env=wrong, ok=False)
    assert denied.returncode == 1 and "invalid, expired or revoked API key" in denied.stderr


def test_ctrl_c_while_following_leaves_the_run_going(server: Server, tmp_path: Path) -> None:
    env = {**server.env, "MODELHOST_URL": server.url, "MODELHOST_API_KEY": ADMIN_KEY}
    cli(server, "datasets", "sample", "iris", "--name", "iris-ctrl-c")
    spec = {"dataset": "iris-ctrl-c", "epochs": 100_000, "batch_size": 1, "register_as": "iris-ctrl-c"}
    (tmp_path / "slow.yaml").write_text(yaml.safe_dump(spec))
    follower = subprocess.Popen(
        [sys.executable, "-m", "modelhost.cli", "train", str(tmp_path / "slow.yaml")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert follower.stdout is not None
    first = follower.stdout.readline()
    run_id = int(first.split()[1])
    assert first.strip() == f"run {run_id} queued"
    client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    try:
        deadline = time.monotonic() + 180  # a worker starts (imports torch) on a possibly busy machine
        while client.get(f"/api/v1/runs/{run_id}").json()["step"] == 0:
            assert time.monotonic() < deadline, "the run never started training"
            time.sleep(0.1)
        follower.send_signal(signal.SIGINT)
        rest = follower.stdout.read()
        assert follower.wait(timeout=60) == 130, rest
        assert f"run {run_id} keeps going" in rest
        step = client.get(f"/api/v1/runs/{run_id}").json()["step"]
        deadline = time.monotonic() + 120
        while (run := client.get(f"/api/v1/runs/{run_id}").json())["step"] == step:  # still training
            assert time.monotonic() < deadline, "the run stopped with its follower"
            time.sleep(0.1)
        assert run["status"] == "running"
        assert client.post(f"/api/v1/runs/{run_id}/cancel").status_code == 200
    finally:  # never leave a 100,000-epoch run burning the cores of the tests after this one
        client.post(f"/api/v1/runs/{run_id}/cancel")
        client.close()
        if follower.poll() is None:
            follower.kill()
        follower.stdout.close()
