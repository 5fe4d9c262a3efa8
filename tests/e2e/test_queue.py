"""Runs that survive their workers: a worker killed with SIGKILL hands its run to a new one,
and standalone ``modelhost worker`` processes sharing one PostgreSQL database execute every
queued run exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelhost.artifacts import open_artifacts
from modelhost.datasets.service import create_sample_dataset
from modelhost.db import Database
from modelhost.training.service import get_logs, get_run, submit_run
from modelhost.training.spec import TrainSpec
from tests.conftest import fresh_postgres_db
from tests.e2e.conftest import DIGITS_SPEC
from tests.e2e.test_runs_lifecycle import wait_for
from tests.servers import server_env

pytestmark = pytest.mark.slow


def test_a_killed_worker_is_replaced_and_the_run_succeeds(http: httpx.Client, digits_split) -> None:
    r = http.post(
        "/api/v1/datasets", data={"name": "digits-upload"}, files={"file": ("digits.csv", digits_split[0])}
    )
    assert r.status_code == 201, r.text
    run_id = http.post("/api/v1/runs", json={**DIGITS_SPEC, "epochs": 30}).json()["id"]
    # past two epochs (19 steps each), so the run has a checkpoint to resume from
    first = wait_for(http, run_id, lambda r: r["status"] == "running" and r["step"] > 40, timeout=120)
    os.kill(first["worker_pid"], signal.SIGKILL)

    run = wait_for(http, run_id, lambda r: r["status"] not in ("queued", "running"), timeout=240)

    assert (run["status"], run["attempt"], run["error"]) == ("succeeded", 2, None), run
    assert run["worker_pid"] != first["worker_pid"] and run["worker_id"] != first["worker_id"]
    assert run["started_at"] == first["started_at"]  # the run's start, not the attempt's
    lines = [entry["line"] for entry in http.get(f"/api/v1/runs/{run_id}/logs").json()]
    started = [line for line in lines if " started run " in line]
    assert started == [
        f"worker {first['worker_id']} started run {run_id} (attempt 1)",
        f"worker {run['worker_id']} started run {run_id} (attempt 2)",
    ]
    died = f"worker process {first['worker_pid']}: worker exited with code -9: killed by SIGKILL"
    assert any(line.startswith(died) for line in lines)
    assert any(
        line.startswith(f"attempt 1 lost: worker process {first['worker_pid']} on ")
        and line.endswith("re-queued as attempt 2")
        for line in lines
    )
    resumed = [line for line in lines if line.startswith("resumed from the checkpoint at step ")]
    assert len(resumed) == 1 and int(resumed[0].split()[6]) >= 38, resumed  # not from the start
    assert lines[-1] == "registered 'digits-mlp' version 1"


@pytest.fixture
def shared_stores(tmp_path: Path, postgres_admin) -> Iterator[tuple[Database, dict[str, str]]]:
    """A migrated PostgreSQL database and a local artifact folder, and the environment that
    points a worker at both (what every host of a split deployment shares)."""
    with fresh_postgres_db(postgres_admin) as url:
        db = Database(url)
        db.migrate()
        artifacts = (tmp_path / "artifacts").as_uri()
        env = server_env(tmp_path / "home", MODELHOST_DATABASE_URL=url, MODELHOST_ARTIFACTS_URL=artifacts)
        yield db, env
        db.dispose()


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "modelhost.cli", "worker", "--poll", "0.2"]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.postgres
def test_two_standalone_workers_execute_every_run_once(shared_stores, tmp_path: Path) -> None:
    db, env = shared_stores
    with db.session() as s:
        create_sample_dataset(s, open_artifacts(env["MODELHOST_ARTIFACTS_URL"]), "iris")
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    workers = [start_worker(env, log) for log in logs]
    try:
        deadline = time.monotonic() + 60
        while not all("waiting for runs" in log.read_text() for log in logs):  # both ready, then race
            assert time.monotonic() < deadline and all(w.poll() is None for w in workers), logs[0].read_text()
            time.sleep(0.1)
        with db.session() as s:
            run_ids = [
                submit_run(s, TrainSpec(dataset="iris", epochs=20, register_as=f"iris-{i}")).id
                for i in range(6)
            ]
        deadline = time.monotonic() + 240
        while True:
            with db.session() as s:
                runs = [get_run(s, r) for r in run_ids]
            if all(r.status not in ("queued", "running") for r in runs):
                break
            assert time.monotonic() < deadline, [(r.id, r.status) for r in runs]
            time.sleep(0.2)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)  # idle now: each stops at once
        codes = [w.wait(timeout=30) for w in workers]

    assert codes == [0, 0]
    assert [r.status for r in runs] == ["succeeded"] * 6, [r.error for r in runs]
    with db.session() as s:
        started = {r: [e.line for e in get_logs(s, r) if " started run " in e.line] for r in run_ids}
    assert all(len(lines) == 1 for lines in started.values()), started
    taken = [int(log.read_text().rsplit("worker stopped after ", 1)[1].split()[0]) for log in logs]
    assert sum(taken) == 6 and min(taken) >= 1, taken  # both raced for the queue; no run twice
    by_worker = {lines[0].split()[1] for lines in started.values()}
    assert len(by_worker) == 2


def test_the_worker_command_refuses_bad_options_and_an_unmigrated_database(tmp_path: Path) -> None:
    env = server_env(tmp_path / "home")
    cmd = [sys.executable, "-m", "modelhost.cli", "worker", "--once"]

    bad = subprocess.run([*cmd, "--lease", "4"], env=env, capture_output=True, text=True, timeout=60)
    empty = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    db = Database(f"sqlite:///{tmp_path / 'home' / 'modelhost.db'}")
    db.migrate()
    db.dispose()
    idle = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)

    assert (
        bad.returncode == 1 and "heartbeat_s: Value error, must be at most half of lease_s (4)" in bad.stderr
    )
    assert empty.returncode == 1 and "database is at schema revision none, this worker needs " in empty.stderr
    assert (idle.returncode, idle.stdout.strip()) == (0, "worker stopped after 0 run(s)"), idle.stderr
