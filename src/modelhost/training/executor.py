"""Local executor: one worker subprocess per run, so a crashing or slow run never blocks or
kills the API. (Ray arrives as a second executor behind the same calls.)

Runs live in the database queue (training/queue.py); this executor is one source of workers
among others (``modelhost worker`` on any host). It starts a worker for each new run, and
every ``check_every_s`` (and whenever one of its workers dies) reaps runs whose worker is
gone and starts workers for queued runs it has none for: re-queued runs are taken up again.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

from sqlalchemy import event

from modelhost.config import Settings, child_env
from modelhost.db import Database
from modelhost.errors import NotReady
from modelhost.training import queue
from modelhost.training import service as runs
from modelhost.training.queue import QueueOptions
from modelhost.training.spec import TrainSpec

log = logging.getLogger("modelhost.executor")


def _tail(path: Path, lines: int = 30) -> list[str]:
    try:
        text = path.read_bytes()[-16_384:].decode("utf-8", "replace")
    except OSError:
        return []
    return [f"worker: {line}" for line in text.splitlines()[-lines:]]


def _exit_reason(code: int) -> str:
    if code >= 0:
        return f"worker exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if code == -signal.SIGKILL else ""
    return f"worker exited with code {code}: killed by {name}{hint}"


class LocalExecutor:
    """Starts and watches local worker processes. ``resume()`` (on server start) takes up what
    the queue holds and starts the periodic check; ``close()`` stops it (workers keep going)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        options: QueueOptions | None = None,
        check_every_s: float = 5.0,
    ) -> None:
        self.settings, self.db = settings, db
        self.options = options or QueueOptions()
        self.check_every_s = check_every_s
        self.log_dir = settings.home / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        # An executor lives as long as its database: the server disposes of it on shutdown.
        event.listen(db.engine, "engine_disposed", lambda _engine: self.close())

    def submit(self, spec: TrainSpec) -> runs.Run:
        """Queue a run and start its worker."""
        with self.db.session() as s:
            run = runs.submit_run(s, spec)
        self.launch(run.id)
        return run

    def launch(self, run_id: int, attempt: int = 1) -> None:
        """Start a worker for queued run ``run_id`` (unless one of ours is already on it) and
        watch it. If no worker can be started the run fails at once and NotReady is raised."""
        log_path = self.log_dir / f"run-{run_id}.log"
        python = self.settings.python or sys.executable
        opts = self.options
        cmd = [python, "-m", "modelhost.training.worker", str(run_id), "--lease", str(opts.lease_s)]
        cmd += ["--heartbeat", str(opts.heartbeat_s), "--max-attempts", str(opts.max_attempts)]
        with self._lock:
            if run_id in self._children:
                return
            try:
                with open(log_path, "ab") as out:
                    log_path.chmod(0o600)
                    proc = subprocess.Popen(
                        cmd,
                        env=child_env(self.settings),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,  # Ctrl-C on the server's terminal doesn't kill the run
                    )
            except OSError as e:
                with self.db.session() as s:
                    runs.fail_if_unfinished(s, run_id, f"could not start a training worker: {e.strerror}")
                raise NotReady(f"could not start a training worker for run {run_id}: {e.strerror}") from e
            self._children[run_id] = proc
        watcher = threading.Thread(target=self._watch, args=(run_id, attempt, proc, log_path), daemon=True)
        watcher.start()

    def _watch(self, run_id: int, attempt: int, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        code = proc.wait()
        with self._lock:
            self._children.pop(run_id, None)
        if code != 0:
            self._worker_died(run_id, attempt, proc.pid, code, log_path)
        if not self._closed.is_set():
            self.check()  # a run it left behind is re-queued and taken up now, not at the next tick

    def _worker_died(self, run_id: int, attempt: int, pid: int, code: int, log_path: Path) -> None:
        """Record why a worker exited badly. A run it held goes back to the queue (by the reaper,
        which sees its pid gone); a run it never claimed fails: another worker would die alike."""
        reason = _exit_reason(code)
        log.warning("run %s: %s (%s)", run_id, reason, log_path)
        with self.db.session() as s:
            run = runs.get_run(s, run_id)
            held = run.status == "running" and run.worker_pid == pid
            if held or queue.fail_unclaimed(s, run_id, attempt, reason):
                runs.append_log(s, run_id, f"worker process {pid}: {reason}")
                for line in _tail(log_path):  # what the worker printed last, readable via the API
                    runs.append_log(s, run_id, line)

    def check(self) -> None:
        """Reap runs whose worker is gone, then start a worker for each queued run that has none here."""
        with self.db.session() as s:
            for taken in queue.reap(s, self.options.max_attempts):
                log.warning("run %s: %s", taken.run_id, taken.reason)
        with self.db.session() as s:
            queued = [r for r in runs.unfinished_runs(s) if r.status == "queued"]
        for run in queued:
            try:
                self.launch(run.id, run.attempt)
            except NotReady:
                log.exception("run %s", run.id)

    def resume(self) -> None:
        """On start: take up queued runs and runs whose worker is gone; then check periodically."""
        self.check()
        threading.Thread(target=self._check_periodically, name="run-queue", daemon=True).start()

    def _check_periodically(self) -> None:
        while not self._closed.wait(self.check_every_s):
            try:
                self.check()
            except Exception:  # a database hiccup; the next tick tries again
                log.exception("checking the run queue failed")

    def close(self) -> None:
        """Stop checking the queue. Workers already started keep running their runs."""
        self._closed.set()
