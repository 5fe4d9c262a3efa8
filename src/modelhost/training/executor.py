"""Local executor: one worker subprocess per run, so a crashing or slow run never blocks or
kills the API. (Ray arrives as a second executor behind the same two calls.)"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from modelhost.config import Settings, child_env
from modelhost.db import Database
from modelhost.errors import NotReady
from modelhost.training import service as runs
from modelhost.training.spec import TrainSpec

log = logging.getLogger("modelhost.executor")


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: Path, lines: int = 30) -> list[str]:
    try:
        text = path.read_bytes()[-16_384:].decode("utf-8", "replace")
    except OSError:
        return []
    return [f"worker: {line}" for line in text.splitlines()[-lines:]]


class LocalExecutor:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings, self.db = settings, db
        self.log_dir = settings.home / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def submit(self, spec: TrainSpec) -> runs.Run:
        """Queue a run and start its worker."""
        with self.db.session() as s:
            run = runs.submit_run(s, spec)
        self.launch(run.id)
        return run

    def launch(self, run_id: int) -> None:
        """Start a worker for a queued run and watch it; a worker that dies fails its run.
        If no worker can be started the run fails at once and NotReady is raised."""
        log_path = self.log_dir / f"run-{run_id}.log"
        python = self.settings.python or sys.executable
        try:
            with open(log_path, "ab") as out:
                os.chmod(log_path, 0o600)
                proc = subprocess.Popen(
                    [python, "-m", "modelhost.training.worker", str(run_id)],
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
        with self._lock:
            self._children[run_id] = proc
        threading.Thread(target=self._reap, args=(run_id, proc, log_path), daemon=True).start()

    def _reap(self, run_id: int, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        code = proc.wait()
        with self._lock:
            self._children.pop(run_id, None)
        if code != 0:
            with self.db.session() as s:
                if runs.fail_if_unfinished(s, run_id, f"worker exited with code {code}"):
                    log.warning("run %s: worker exited with code %s (%s)", run_id, code, log_path)
                    for line in _tail(log_path):  # what the worker printed last, readable via the API
                        runs.append_log(s, run_id, line)

    def resume(self) -> None:
        """On start: launch queued runs; fail running runs whose worker is gone."""
        with self.db.session() as s:
            pending = runs.unfinished_runs(s)
        for run in pending:
            if run.status == "queued":
                self.launch(run.id)
            elif not _alive(run.worker_pid):
                with self.db.session() as s:
                    runs.fail_if_unfinished(
                        s, run.id, "worker lost (server restarted while the run was running)"
                    )
