"""Training workers. ``python -m modelhost.training.worker RUN_ID`` executes one run (the
server's local executor starts one per run); ``work()`` (``modelhost worker``) takes queued
runs one after another, on any host that shares the database and the artifact store.

Either way a worker claims its run atomically, renews the claim's lease from a heartbeat
thread while it trains, and writes everything to the store; a crash here never touches the
API process, and a worker that dies leaves a run the reaper gives to another worker.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from importlib import resources
from types import TracebackType

import torch

from modelhost.artifacts import ArtifactStore, open_store
from modelhost.config import child_env, load_settings
from modelhost.datasets.service import get_dataset_by_id
from modelhost.datasets.sources import load_source
from modelhost.db import Database
from modelhost.errors import Conflict, NotReady, PlatformError
from modelhost.filemodes import restrict_umask
from modelhost.registry.service import register_version
from modelhost.training import distributed, queue
from modelhost.training import service as runs
from modelhost.training.checkpoints import CheckpointStore
from modelhost.training.data import PreparedData, given_splits, prepare
from modelhost.training.loop import Cancelled, FitResult, Position, fit
from modelhost.training.package import package
from modelhost.training.queue import QueueOptions
from modelhost.training.spec import TrainSpec

log = logging.getLogger("modelhost.worker")


class ProgressReporter:
    """Writes progress to the store: every epoch, and per-step loss at most every ``interval`` s.
    Returns True (stop) when ``should_stop()`` says so, a cancel was requested, or the run is
    no longer ``worker_id``'s."""

    def __init__(
        self,
        db: Database,
        run_id: int,
        worker_id: str | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        interval: float = 0.5,
    ) -> None:
        self.db, self.run_id, self.worker_id, self.interval = db, run_id, worker_id, interval
        self.should_stop = should_stop
        self._last = 0.0

    def __call__(self, step: int, total: int, epoch: int | None, metrics: dict[str, float]) -> bool:
        if self.should_stop():
            return True
        now = time.monotonic()
        if epoch is None and now - self._last < self.interval:
            return False
        self._last = now
        with self.db.session() as s:
            stop = runs.record_progress(s, self.run_id, step, total, metrics, epoch, self.worker_id)
            if epoch is not None and not stop:
                shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
                runs.append_log(s, self.run_id, f"epoch {epoch} step {step}/{total}: {shown}")
        return stop


class Heartbeat:
    """Renews a claimed run's lease every ``heartbeat_s`` from a background thread.

    ``stopping()`` turns True when training should stop, and ``reason`` says why: "cancel"
    (requested), "lost" (the run is no longer this worker's: taken back, ended elsewhere) or
    "shutdown" (``shutdown`` was set: the worker was asked to exit). A database that doesn't
    answer is retried at the next beat; the lease is there to absorb a few missed ones.
    """

    def __init__(
        self,
        db: Database,
        run_id: int,
        worker_id: str,
        options: QueueOptions,
        shutdown: threading.Event | None = None,
    ) -> None:
        self.db, self.run_id, self.worker_id, self.options = db, run_id, worker_id, options
        self.shutdown = shutdown or threading.Event()
        self.reason: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-run-{run_id}", daemon=True)

    def stopping(self) -> bool:
        if self.reason is None and self.shutdown.is_set():
            self.reason = "shutdown"
        return self.reason is not None

    def _beat(self) -> None:
        while not self._done.wait(self.options.heartbeat_s):
            try:
                with self.db.session() as s:
                    beat = queue.heartbeat(s, self.run_id, self.worker_id, self.options.lease_s)
            except Exception:  # the database may be back by the next beat
                log.warning("run %s: heartbeat failed; retrying", self.run_id, exc_info=True)
                continue
            if beat != "ok" and self.reason is None:
                self.reason = beat
            if beat == "lost":
                log.warning("run %s is no longer held by worker %s; stopping it", self.run_id, self.worker_id)
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        self._thread.join()


def _log(db: Database, run_id: int, line: str) -> None:
    with db.session() as s:
        runs.append_log(s, run_id, line)


def train_and_register(
    db: Database, store: ArtifactStore, run_id: int, worker_id: str, on_progress: ProgressReporter
) -> None:
    """The training body of one attempt: prepare → fit → package → register → finish.

    Raises Cancelled when ``on_progress`` asks to stop, and any failure of the run as is; the
    caller records it. A run taken up again after its worker died runs this again from the
    start; continuing from its last checkpoint is the training loop's business.
    """
    with db.session() as s:
        run = runs.get_run(s, run_id)
        spec = TrainSpec.model_validate(run.spec)
        dataset = get_dataset_by_id(s, run.dataset_id)
        source = load_source(s, store, run.dataset_id)
        validation, test = given_splits(s, store, spec)
    data = prepare(source, spec, validation, test)

    def still_ours() -> bool:
        with db.session() as s:
            return runs.holds_run(s, run_id, worker_id)

    checkpoints = CheckpointStore(store, run_id, may_write=still_ours)

    def resumed(at: Position) -> None:
        _log(
            db, run_id, f"resumed from the checkpoint at step {at.step} (epoch {at.epoch}, batch {at.batch})"
        )

    if spec.world_size > 1:
        result = _fit_distributed(db, run_id, spec, data, on_progress, checkpoints, resumed)
    else:
        result = fit(spec, data, on_progress, checkpoints, on_resume=resumed)
    manifest, files = package(spec, data, result, run_id, dataset.sha256)
    with db.session() as s:
        version = register_version(s, store, spec.model_name, manifest, files, run_id, dataset.id)
        runs.append_log(s, run_id, f"registered {spec.model_name!r} version {version.number}")
        if not runs.finish_run(s, run_id, "succeeded", version_id=version.id, worker_id=worker_id):
            raise Conflict(f"run {run_id} was ended elsewhere; its version is not registered")
    checkpoints.delete()  # the version holds the weights now; failed and cancelled runs keep theirs


def _fit_distributed(
    db: Database,
    run_id: int,
    spec: TrainSpec,
    data: PreparedData,
    on_progress: ProgressReporter,
    checkpoints: CheckpointStore,
    on_resume: Callable[[Position], None],
) -> FitResult:
    """This worker is rank 0; ranks 1..N-1 are subprocesses that read the run themselves."""
    settings = load_settings()
    init_method = distributed.free_init_method()
    _log(db, run_id, f"data parallel: {spec.world_size} processes ({init_method})")
    ranks = distributed.launch_ranks(
        run_id, spec.world_size, init_method, child_env(settings), settings.python or sys.executable
    )
    try:
        result = distributed.fit_rank(spec, data, 0, init_method, on_progress, checkpoints, on_resume)
    finally:
        for proc in ranks:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # rank 0 failed and left them waiting
                proc.kill()
                proc.wait()
    failed = [p.returncode for p in ranks if p.returncode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} of {spec.world_size - 1} helper ranks failed (exit {failed[0]})")
    return result


OUT_OF_MEMORY = "out of memory: lower batch_size or the model's size, or give the worker more memory"


def failure_reason(e: Exception) -> str:
    """What a run's record says about the exception that ended it."""
    if isinstance(e, PlatformError):
        return e.message
    # torch's CPU allocator raises a RuntimeError, its CUDA one OutOfMemoryError, numpy MemoryError
    if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e)):
        return OUT_OF_MEMORY
    if isinstance(e, torch.OutOfMemoryError):
        return "out of memory on the GPU: lower batch_size or the model's size"
    if isinstance(e, ValueError | FloatingPointError):  # bad data or diverging training
        return f"{type(e).__name__}: {e}"
    return f"internal error in the worker ({type(e).__name__}); see the run log"


TrainingBody = Callable[[Database, ArtifactStore, int, str, ProgressReporter], None]


def run_claimed(
    db: Database,
    store: ArtifactStore,
    run: runs.Run,
    worker_id: str,
    options: QueueOptions,
    shutdown: threading.Event | None = None,
    body: TrainingBody = train_and_register,
) -> str | None:
    """Execute a run ``worker_id`` has claimed, heartbeating throughout. Returns how it ended:
    "succeeded", "failed", "cancelled", "queued" (given back on shutdown), or None when the run
    was taken from this worker, which then leaves its record alone."""
    _log(db, run.id, f"worker {worker_id} started run {run.id} (attempt {run.attempt})")
    with Heartbeat(db, run.id, worker_id, options, shutdown) as hb:
        try:
            body(db, store, run.id, worker_id, ProgressReporter(db, run.id, worker_id, hb.stopping))
            return "succeeded"
        except Cancelled as e:
            return _stopped(db, run.id, worker_id, hb.reason, str(e))
        except Exception as e:  # MemoryError included: the run must say it ran out
            return _failed(db, run.id, worker_id, e)


def _failed(db: Database, run_id: int, worker_id: str, e: Exception) -> str:
    reason = failure_reason(e)
    if reason.startswith("internal error"):  # the record says why in short; the log has the rest
        log.exception("run %s failed", run_id)
        _log(db, run_id, traceback.format_exc())
    with db.session() as s:
        if runs.finish_run(s, run_id, "failed", error=reason, worker_id=worker_id):
            runs.append_log(s, run_id, f"run failed: {reason}")
    return "failed"


def _stopped(db: Database, run_id: int, worker_id: str, why: str | None, where: str) -> str | None:
    """Training stopped on request (``where`` says at which step): end the run as cancelled,
    give it back to the queue on shutdown, or leave it if it isn't ours any more."""
    with db.session() as s:
        run = runs.get_run(s, run_id)
        if run.status != "running" or run.worker_id != worker_id:
            runs.append_log(s, run_id, f"worker {worker_id} stopped ({where}): the run is no longer its own")
            return None
        if why == "shutdown" and not run.cancel_requested:
            queue.release_run(s, run_id, worker_id, f"the worker is shutting down ({where})")
            return "queued"
        if runs.finish_run(s, run_id, "cancelled", worker_id=worker_id):
            runs.append_log(s, run_id, f"run cancelled: {where}")
    return "cancelled"


def _reap(db: Database, options: QueueOptions) -> None:
    with db.session() as s:
        for taken in queue.reap(s, options.max_attempts):
            log.warning("run %s: %s", taken.run_id, taken.reason)


def execute_run(
    db: Database,
    store: ArtifactStore,
    run_id: int,
    options: QueueOptions | None = None,
    shutdown: threading.Event | None = None,
) -> str | None:
    """Claim ``run_id`` and run it to its end; returns how it ended (see ``run_claimed``), or
    None if the run wasn't ours to take."""
    options = options or QueueOptions()
    worker_id = runs.new_worker_id()
    _reap(db, options)
    with db.session() as s:
        if not runs.claim_run(s, run_id, os.getpid(), worker_id, options.lease_s):
            return None
        run = runs.get_run(s, run_id)
    return run_claimed(db, store, run, worker_id, options, shutdown)


def work(
    db: Database,
    store: ArtifactStore,
    options: QueueOptions | None = None,
    once: bool = False,
    shutdown: threading.Event | None = None,
) -> int:
    """The standalone worker loop: reap, claim the oldest queued run, run it; when the queue is
    empty wait ``poll_s``. ``once``: at most one run, then return. Returns when ``shutdown`` is
    set (a run in progress goes back to the queue); the result is the number of runs taken."""
    options, shutdown = options or QueueOptions(), shutdown or threading.Event()
    worker_id, taken = runs.new_worker_id(), 0
    log.info("worker %s waiting for runs", worker_id)
    while not shutdown.is_set():
        _reap(db, options)
        with db.session() as s:
            run = queue.claim_next(s, worker_id, options.lease_s)
        if run is not None:
            taken += 1
            status = run_claimed(db, store, run, worker_id, options, shutdown)
            log.info("run %s: %s", run.id, status or "taken back from this worker")
        if once:
            break
        if run is None:
            shutdown.wait(options.poll_s)
    return taken


def stop_on_signals(shutdown: threading.Event) -> None:
    """SIGTERM or Ctrl-C sets ``shutdown`` (the run in progress goes back to the queue); a
    second one kills the worker at once (the reaper then re-queues the run)."""

    def handler(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping after handing back the current run", signum)
        shutdown.set()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def open_stores() -> tuple[Database, ArtifactStore]:
    """The stores the settings name. NotReady if the database's schema isn't this version's:
    the server migrates it on start; a worker on another version must not touch it."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    settings = load_settings()
    db = Database(settings.resolved_database_url)
    head = ScriptDirectory(str(resources.files("modelhost") / "migrations")).get_current_head()
    with db.engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current != head:
        db.dispose()
        raise NotReady(
            f"the database is at schema revision {current or 'none'}, this worker needs {head}: "
            "start (or upgrade) the server first, it migrates the database"
        )
    return db, open_store(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelhost.training.worker")
    parser.add_argument("run_id", type=int, metavar="RUN_ID")
    parser.add_argument("--lease", type=float, default=None, help="lease_s (seconds)")
    parser.add_argument("--heartbeat", type=float, default=None, help="heartbeat_s (seconds)")
    parser.add_argument("--max-attempts", type=int, default=None)
    args = parser.parse_args(argv)
    restrict_umask()  # checkpoints and temp files are private (0600/0700), as the server's are
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    options = QueueOptions.parse(
        lease_s=args.lease, heartbeat_s=args.heartbeat, max_attempts=args.max_attempts
    )
    shutdown = threading.Event()
    stop_on_signals(shutdown)
    db, store = open_stores()
    try:
        status = execute_run(db, store, args.run_id, options, shutdown)
    finally:
        db.dispose()
    return 0 if status in (None, "succeeded", "cancelled", "queued") else 1


if __name__ == "__main__":
    sys.exit(main())
