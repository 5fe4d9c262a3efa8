"""The run queue on SQLite and PostgreSQL: atomic claims under a race, leases renewed by
heartbeats, the reaper's re-queue and its limit, and a worker that lost its run writing nothing.

Workers here are threads with their own engines (their own connections); the training body
is a small fake loop that calls ``on_progress`` like the real one, so the queue's behaviour is
tested without training a model. tests/e2e/test_queue.py runs the real thing.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from modelhost.db import Database, utcnow
from modelhost.errors import InvalidInput
from modelhost.training.loop import Cancelled
from modelhost.training.queue import QueueOptions, claim_next, heartbeat, reap, release_run
from modelhost.training.service import (
    cancel_run,
    claim_run,
    finish_run,
    get_logs,
    get_metrics,
    get_run,
    new_worker_id,
    record_progress,
    submit_run,
)
from modelhost.training.spec import TrainSpec
from modelhost.training.worker import OUT_OF_MEMORY, Heartbeat, ProgressReporter, run_claimed
from tests.store.test_store import add_dataset

ELSEWHERE = "elsewhere.example:4242:0001"  # a worker on another host: only its lease tells it is gone
LATER = dt.timedelta(hours=1)


def submit(db: Database, n: int = 1) -> list[int]:
    with db.session() as s:
        return [submit_run(s, TrainSpec(dataset="flowers", register_as="flowers-mlp")).id for _ in range(n)]


def claim(db: Database, worker_id: str = ELSEWHERE, lease_s: float = 30.0) -> int:
    with db.session() as s:
        run = claim_next(s, worker_id, lease_s)
    assert run is not None
    return run.id


def log_lines(db: Database, run_id: int) -> list[str]:
    with db.session() as s:
        return [entry.line for entry in get_logs(s, run_id)]


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def flowers(db, store) -> None:
    add_dataset(db, store)


# --- claims ------------------------------------------------------------------------------


def test_two_workers_racing_claim_each_run_exactly_once(db, flowers):
    run_ids = submit(db, 20)
    engines = [Database(db.url), Database(db.url)]  # separate engines: separate connections
    workers = [new_worker_id(), new_worker_id()]
    start = threading.Barrier(2)

    def drain(i: int) -> list[int]:
        start.wait(timeout=10)
        taken = []
        while True:
            with engines[i].session() as s:
                run = claim_next(s, workers[i])
            if run is None:
                return taken
            taken.append(run.id)

    try:
        with ThreadPoolExecutor(2) as pool:
            first, second = pool.map(drain, range(2))
    finally:
        for e in engines:
            e.dispose()

    assert sorted(first + second) == run_ids and not set(first) & set(second)
    with db.session() as s:
        holders = {r: get_run(s, r).worker_id for r in run_ids}
    assert holders == {**dict.fromkeys(first, workers[0]), **dict.fromkeys(second, workers[1])}


def test_claim_next_takes_the_oldest_queued_run_and_records_the_claim(db, flowers):
    cancelled, second, third = submit(db, 3)
    with db.session() as s:
        cancel_run(s, cancelled)
    worker = new_worker_id()

    with db.session() as s:
        run = claim_next(s, worker, lease_s=45)
    with db.session() as s:
        assert claim_next(s, worker).id == third
        assert claim_next(s, worker) is None

    assert (run.id, run.status, run.attempt, run.worker_id) == (second, "running", 1, worker)
    assert run.worker_pid == os.getpid() and worker.startswith(f"{socket.gethostname()}:{os.getpid()}:")
    assert run.lease_expires_at - run.heartbeat_at == dt.timedelta(seconds=45)
    assert run.started_at == run.heartbeat_at


# --- heartbeats ----------------------------------------------------------------------------


def test_heartbeat_extends_the_lease_and_reports_cancel(db, flowers):
    [run_id] = submit(db)
    claim(db, lease_s=10)
    with db.session() as s:
        before = get_run(s, run_id)

    with db.session() as s:
        assert heartbeat(s, run_id, ELSEWHERE, lease_s=600) == "ok"
    with db.session() as s:
        after = get_run(s, run_id)
    assert after.heartbeat_at >= before.heartbeat_at
    assert after.lease_expires_at - after.heartbeat_at == dt.timedelta(seconds=600)
    assert after.lease_expires_at > before.lease_expires_at + dt.timedelta(seconds=500)

    with db.session() as s:
        assert heartbeat(s, run_id, "someone:1:else") == "lost"  # not its run: nothing renewed
        cancel_run(s, run_id)
    with db.session() as s:
        assert heartbeat(s, run_id, ELSEWHERE) == "cancel"
        assert get_run(s, run_id).lease_expires_at - get_run(s, run_id).heartbeat_at == dt.timedelta(
            seconds=30
        )


def test_heartbeat_thread_renews_the_lease_while_it_runs(db, flowers):
    [run_id] = submit(db)
    claim(db, lease_s=1)
    with db.session() as s:
        first = get_run(s, run_id).lease_expires_at

    options = QueueOptions(lease_s=1, heartbeat_s=0.05)
    with Heartbeat(db, run_id, ELSEWHERE, options) as hb:

        def renewed() -> bool:
            with db.session() as s:
                return get_run(s, run_id).lease_expires_at > first

        wait_until(renewed)
        assert hb.stopping() is False
    with db.session() as s:
        assert reap(s) == []  # renewed: not taken back


# --- the reaper ----------------------------------------------------------------------------


def test_expired_lease_requeues_with_attempt_plus_one_and_says_why(db, flowers):
    [run_id] = submit(db)
    claim(db)
    with db.session() as s:
        assert reap(s) == []  # the lease still holds
        started = get_run(s, run_id).started_at

    with db.session() as s:
        [reaped] = reap(s, now=utcnow() + LATER)
    with db.session() as s:
        run = get_run(s, run_id)

    assert (reaped.run_id, reaped.status) == (run_id, "queued")
    assert (run.status, run.attempt, run.worker_id, run.worker_pid, run.lease_expires_at) == (
        "queued",
        2,
        None,
        None,
        None,
    )
    [line] = log_lines(db, run_id)
    assert line.startswith("attempt 1 lost: lease expired at ") and line == reaped.reason
    assert f"last seen {run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC as {ELSEWHERE}" in line
    assert line.endswith("; re-queued as attempt 2")

    again = new_worker_id()
    with db.session() as s:
        run = claim_next(s, again)
    assert (run.id, run.attempt, run.worker_id, run.started_at) == (run_id, 2, again, started)


def test_after_max_attempts_a_lost_run_fails_with_the_reason(db, flowers):
    [run_id] = submit(db)
    for attempt in (1, 2, 3):
        claim(db)
        with db.session() as s:
            [reaped] = reap(s, max_attempts=3, now=utcnow() + LATER)
        assert reaped.status == ("failed" if attempt == 3 else "queued")

    with db.session() as s:
        run = get_run(s, run_id)
        assert claim_next(s, new_worker_id()) is None
    assert (run.status, run.attempt) == ("failed", 3) and run.finished_at is not None
    assert run.error.startswith(f"worker lost 3 times; last seen {run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC")
    assert run.error.endswith(")") and f"as {ELSEWHERE} (lease expired at " in run.error
    assert log_lines(db, run_id)[-1] == f"run failed: {run.error}"


def test_a_dead_local_worker_is_requeued_without_waiting_for_its_lease(db, flowers):
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    gone, alive = submit(db, 2)
    claim(db, new_worker_id(dead.pid), lease_s=3600)
    claim(db, new_worker_id(os.getpid()), lease_s=3600)  # this process: alive

    with db.session() as s:
        [reaped] = reap(s)

    assert (reaped.run_id, reaped.status) == (gone, "queued")
    assert reaped.reason.startswith(
        f"attempt 1 lost: worker process {dead.pid} on {socket.gethostname()} is gone"
    )
    with db.session() as s:
        assert (get_run(s, gone).attempt, get_run(s, alive).status) == (2, "running")


def test_a_lost_run_with_a_cancel_request_ends_cancelled(db, flowers):
    [run_id] = submit(db)
    claim(db)
    with db.session() as s:
        cancel_run(s, run_id)
    with db.session() as s:
        [reaped] = reap(s, now=utcnow() + LATER)
    with db.session() as s:
        run = get_run(s, run_id)
    assert (reaped.status, run.status, run.error, run.attempt) == ("cancelled", "cancelled", None, 1)
    assert log_lines(db, run_id) == [reaped.reason] and reaped.reason.startswith(
        "cancelled; its worker is gone"
    )


def test_a_worker_whose_run_was_taken_back_writes_nothing(db, flowers):
    [run_id] = submit(db)
    claim(db)
    with db.session() as s:
        reap(s, now=utcnow() + LATER)
    successor = claim(db, "successor:1:0002")

    with db.session() as s:
        assert record_progress(s, run_id, 5, 10, {"loss": 1.0}, worker_id=ELSEWHERE) is True
        assert heartbeat(s, run_id, ELSEWHERE) == "lost"
        assert finish_run(s, run_id, "failed", error="late", worker_id=ELSEWHERE) is False
        assert release_run(s, run_id, ELSEWHERE, "late") is False
    with db.session() as s:
        run = get_run(s, run_id)
        assert (run.status, run.step, run.worker_id, get_metrics(s, run_id)) == (
            "running",
            0,
            "successor:1:0002",
            [],
        )
        assert record_progress(s, run_id, 5, 10, {"loss": 1.0}, worker_id="successor:1:0002") is False
        assert finish_run(s, successor, "succeeded", worker_id="successor:1:0002") is True


def test_claim_run_by_id_still_works_for_a_given_run(db, flowers):
    [run_id] = submit(db)
    with db.session() as s:
        assert claim_run(s, run_id, pid=77) is True
        assert get_run(s, run_id).worker_id.split(":")[1] == "77"


# --- a worker running a claimed run ------------------------------------------------------


def fake_training(steps: int = 100_000) -> Callable[..., None]:
    """A training body that reports every step, as fit() does, and stops when told to."""

    def body(db, store, run_id, worker_id, on_progress: ProgressReporter) -> None:
        for step in range(1, steps + 1):
            if on_progress(step, steps, None, {"train_loss": 1.0 / step}):
                raise Cancelled(f"cancelled at step {step}")
            time.sleep(0.002)
        raise AssertionError("training was never told to stop")

    return body


FAST = QueueOptions(lease_s=2, heartbeat_s=0.05)


@dataclass
class Training:
    """A claimed run that ``run_claimed`` trains (with the fake body) on a thread."""

    run_id: int
    worker: str
    thread: threading.Thread
    result: dict[str, str | None]

    def outcome(self) -> str | None:
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the worker did not stop"
        return self.result["status"]


def start_training(db: Database, store, shutdown: threading.Event | None = None) -> Training:
    [run_id] = submit(db)
    worker = new_worker_id()
    claim(db, worker, lease_s=FAST.lease_s)
    with db.session() as s:
        run = get_run(s, run_id)
    result: dict[str, str | None] = {}

    def work() -> None:
        result["status"] = run_claimed(db, store, run, worker, FAST, shutdown, fake_training())

    thread = threading.Thread(target=work)
    thread.start()

    def metrics_written() -> bool:
        with db.session() as s:
            return bool(get_metrics(s, run_id))

    wait_until(metrics_written)  # it is training
    return Training(run_id, worker, thread, result)


def test_a_worker_stops_training_when_its_run_is_taken_back(db, store, flowers):
    training = start_training(db, store)

    with db.session() as s:
        reap(s, now=utcnow() + LATER)  # as if its lease ran out while it stalled

    assert training.outcome() is None
    with db.session() as s:
        run = get_run(s, training.run_id)
    assert (run.status, run.attempt, run.error) == ("queued", 2, None)
    last = log_lines(db, training.run_id)[-1]
    assert last.startswith(f"worker {training.worker} stopped (cancelled at step ")
    assert last.endswith("): the run is no longer its own")


def test_cancel_stops_a_running_worker_and_ends_the_run_cancelled(db, store, flowers):
    training = start_training(db, store)

    with db.session() as s:
        cancel_run(s, training.run_id)

    assert training.outcome() == "cancelled"
    with db.session() as s:
        run = get_run(s, training.run_id)
    assert (run.status, run.error, run.lease_expires_at) == ("cancelled", None, None)
    assert log_lines(db, training.run_id)[-1].startswith("run cancelled: cancelled at step ")


def test_a_worker_shutting_down_hands_its_run_back_as_the_same_attempt(db, store, flowers):
    shutdown = threading.Event()
    training = start_training(db, store, shutdown)

    shutdown.set()

    assert training.outcome() == "queued"
    with db.session() as s:
        run = get_run(s, training.run_id)
    assert (run.status, run.attempt, run.worker_id) == ("queued", 1, None)
    assert log_lines(db, training.run_id)[-1].startswith(
        f"worker {training.worker} released the run: the worker is shutting down"
    )


def allocate_too_much_numpy() -> None:
    np.empty(2**45)  # 256 TiB: refused by the allocator at once, nothing touched


def allocate_too_much_torch() -> None:
    torch.empty(2**45)


@pytest.mark.parametrize("allocate", [allocate_too_much_numpy, allocate_too_much_torch])
def test_running_out_of_memory_fails_the_run_saying_so(db, store, flowers, allocate):
    [run_id] = submit(db)
    worker = new_worker_id()
    claim(db, worker)
    with db.session() as s:
        run = get_run(s, run_id)

    status = run_claimed(db, store, run, worker, FAST, body=lambda *_: allocate())

    with db.session() as s:
        run = get_run(s, run_id)
    assert (status, run.status, run.error) == ("failed", "failed", OUT_OF_MEMORY)
    assert log_lines(db, run_id)[-1] == f"run failed: {OUT_OF_MEMORY}"


# --- options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"lease_s": 30, "heartbeat_s": 20},
            "heartbeat_s: Value error, must be at most half of lease_s (30)",
        ),
        ({"lease_s": 4}, "heartbeat_s: Value error, must be at most half of lease_s (4)"),  # the default 5
        ({"lease_s": 0}, "lease_s: Input should be greater than 0"),
        ({"max_attempts": 0}, "max_attempts: Input should be greater than or equal to 1"),
    ],
)
def test_queue_options_name_the_bad_one(values, message):
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        QueueOptions.parse(**values)
    assert QueueOptions.parse(lease_s=None) == QueueOptions()
