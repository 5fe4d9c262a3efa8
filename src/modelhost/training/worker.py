"""The worker process: ``python -m modelhost.training.worker RUN_ID``.

It claims the run atomically, trains, registers the result and finishes the run, writing
everything to the store; a crash here never touches the API process.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback

from modelhost.artifacts import ArtifactStore, open_artifacts
from modelhost.config import load_settings
from modelhost.datasets.service import get_dataset_by_id, load_table
from modelhost.db import Database
from modelhost.errors import Conflict, PlatformError
from modelhost.registry.manifest import WEIGHTS_FILE
from modelhost.registry.service import register_version
from modelhost.training import service as runs
from modelhost.training.data import prepare
from modelhost.training.loop import Cancelled, fit
from modelhost.training.package import package
from modelhost.training.spec import TrainSpec

log = logging.getLogger("modelhost.worker")


class ProgressReporter:
    """Writes progress to the store: every epoch, and per-step loss at most every ``interval`` s."""

    def __init__(self, db: Database, run_id: int, interval: float = 0.5) -> None:
        self.db, self.run_id, self.interval = db, run_id, interval
        self._last = 0.0

    def __call__(self, step: int, total: int, epoch: int | None, metrics: dict[str, float]) -> bool:
        now = time.monotonic()
        if epoch is None and now - self._last < self.interval:
            return False
        self._last = now
        with self.db.session() as s:
            cancel = runs.record_progress(s, self.run_id, step, total, metrics, epoch)
            if epoch is not None:
                shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
                runs.append_log(s, self.run_id, f"epoch {epoch} step {step}/{total}: {shown}")
        return cancel


def _log(db: Database, run_id: int, line: str) -> None:
    with db.session() as s:
        runs.append_log(s, run_id, line)


def execute_run(db: Database, store: ArtifactStore, run_id: int) -> str | None:
    """Run ``run_id`` to its end; returns the final status, or None if the run wasn't ours."""
    with db.session() as s:
        if not runs.claim_run(s, run_id, os.getpid()):
            return None
    _log(db, run_id, f"worker {os.getpid()} started run {run_id}")
    try:
        with db.session() as s:
            run = runs.get_run(s, run_id)
            spec = TrainSpec.model_validate(run.spec)
            dataset = get_dataset_by_id(s, run.dataset_id)
            table = load_table(s, store, run.dataset_id)
        data = prepare(table, spec)
        result = fit(spec, data, ProgressReporter(db, run_id))
        manifest, weights = package(spec, data, result, run_id, dataset.sha256)
        with db.session() as s:
            version = register_version(
                s, store, spec.model_name, manifest, {WEIGHTS_FILE: weights}, run_id, dataset.id
            )
            runs.append_log(s, run_id, f"registered {spec.model_name!r} version {version.number}")
            if not runs.finish_run(s, run_id, "succeeded", version_id=version.id):
                raise Conflict(f"run {run_id} was ended elsewhere; its version is not registered")
        return "succeeded"
    except Cancelled as e:
        status, reason = "cancelled", str(e)
    except PlatformError as e:
        status, reason = "failed", e.message
    except (ValueError, FloatingPointError) as e:  # bad data or diverging training: the message is the reason
        status, reason = "failed", f"{type(e).__name__}: {e}"
    except Exception as e:  # the record says why in short; the run log has the traceback
        log.exception("run %s failed", run_id)
        _log(db, run_id, traceback.format_exc())
        status, reason = "failed", f"internal error in the worker ({type(e).__name__}); see the run log"
    with db.session() as s:
        runs.append_log(s, run_id, f"run {status}: {reason}")
        runs.finish_run(s, run_id, status, error=None if status == "cancelled" else reason)  # type: ignore[arg-type]
    return status


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m modelhost.training.worker RUN_ID", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    db = Database(settings.resolved_database_url)
    store = open_artifacts(settings.resolved_artifacts_url, s3_endpoint_url=settings.s3_endpoint_url)
    status = execute_run(db, store, int(args[0]))
    db.dispose()
    return 0 if status in (None, "succeeded", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
