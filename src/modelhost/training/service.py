"""Training runs: submit, list, show, cancel, metrics and logs; and the calls a worker makes
(claim, progress, metrics, finish). The run's state lives only in the store; the queue
around it (claim the next run, heartbeats, the reaper) is training/queue.py."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import Session

from modelhost.auth.authz import SYSTEM, Action, Principal, only_visible, require
from modelhost.auth.projects import project_name, target_project
from modelhost.datasets.service import ArraysSummary, Dataset, get_dataset
from modelhost.datasets.tables import DatasetRow
from modelhost.db import UTCDateTime, utcnow
from modelhost.errors import Conflict, InvalidInput, NotFound
from modelhost.training.spec import TrainSpec
from modelhost.training.tables import MetricRow, RunLogRow, RunRow

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: tuple[RunStatus, ...] = ("succeeded", "failed", "cancelled")


class Run(BaseModel):
    id: int
    name: str
    project: str
    status: RunStatus
    spec: dict[str, Any]
    dataset_id: int
    model_name: str
    version_id: int | None
    error: str | None
    cancel_requested: bool
    worker_pid: int | None
    attempt: int
    worker_id: str | None
    heartbeat_at: dt.datetime | None
    lease_expires_at: dt.datetime | None
    step: int
    total_steps: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class Metric(BaseModel):
    key: str
    step: int
    epoch: int | None
    value: float


class LogLine(BaseModel):
    id: int
    line: str
    created_at: dt.datetime


def _entity(s: Session, row: RunRow) -> Run:
    fields = {c: getattr(row, c) for c in Run.model_fields if c != "project"}
    return Run.model_validate({**fields, "project": project_name(s, row.project_id)})


def _row(s: Session, run_id: int, access: Principal = SYSTEM, action: Action = "read") -> RunRow:
    """Run ``run_id`` if ``access`` may do ``action`` on it (NotFound if it may not see it)."""
    row = s.get(RunRow, run_id)
    if row is None:
        raise NotFound(f"run {run_id} not found")
    require(access, row.project_id, action, f"run {run_id}")
    return row


def submit_run(s: Session, spec: TrainSpec, *, access: Principal = SYSTEM, project: str | None = None) -> Run:
    """Check the spec against its dataset and queue the run, in the dataset's project
    (or ``project``, which must be the same); its model must be new or of that project."""
    from modelhost.registry.service import check_model_project

    cores = os.cpu_count() or 1
    if spec.world_size > cores:  # each rank is a local process: more would only thrash the machine
        raise InvalidInput(f"world_size: {spec.world_size} ranks, but this machine has {cores} cores")
    ds = get_dataset(s, spec.dataset, access=access)
    parent = s.scalar(sa.select(DatasetRow.project_id).where(DatasetRow.id == ds.id))
    project_id = target_project(s, access, project, parent)
    check_model_project(s, spec.model_name, project_id, access)
    resolved = resolve_against(spec, ds)
    for role in ("validation_dataset", "test_dataset"):
        name = getattr(spec.split, role)
        if name is not None and get_dataset(s, name, access=access).kind != ds.kind:
            raise InvalidInput(f"split.{role}: dataset {name!r} is not {ds.kind} like {ds.name!r}")
    row = RunRow(
        project_id=project_id,
        name=spec.name or spec.model_name,
        status="queued",
        spec=resolved.model_dump(mode="json"),
        dataset_id=ds.id,
        model_name=spec.model_name,
    )
    s.add(row)
    s.flush()
    return _entity(s, row)


def resolve_against(spec: TrainSpec, ds: Dataset) -> TrainSpec:
    """The spec with its target filled in from the dataset; InvalidInput when the spec asks
    for what the dataset does not have. (Shapes and values are checked when the data loads.)"""
    if ds.kind == "text":
        if spec.task != "language_model":
            raise InvalidInput(
                f"task: dataset {ds.name!r} is a text corpus; it trains a language_model (gpt)"
            )
        return spec.model_copy(update={"target": None})
    if spec.task == "language_model":
        raise InvalidInput(
            f"task: a language model trains on a text corpus; dataset {ds.name!r} is {ds.kind}"
        )
    if ds.kind == "images":
        if spec.model.architecture != "cnn":
            raise InvalidInput(f"model.architecture: dataset {ds.name!r} holds images; train a cnn")
        return spec.model_copy(update={"target": None})  # the labels are the class folders
    if isinstance(ds.summary, ArraysSummary):
        names = [a.name for a in ds.summary.arrays]
        target = spec.target or ds.target or ("y" if "y" in names else None)
        features = spec.features or ["x"]
        what, known = "array", names
    else:
        columns = {c.name: c.type for c in ds.columns}
        target = spec.target or ds.target
        features = spec.features or []
        what, known = "column", list(columns)
        if target in columns and spec.task == "regression" and columns[target] == "str":
            raise InvalidInput(f"target: column {target!r} holds text; a regression target must be numeric")
        sequence_model = spec.model.architecture in ("lstm", "gru", "transformer")
        for f in features:
            if columns.get(f) == "str" and not sequence_model and f not in spec.preprocessing.categorical:
                raise InvalidInput(
                    f"features: column {f!r} holds text; list it in preprocessing.categorical "
                    "(one-hot), or read it with an lstm, gru or transformer"
                )
    if target is None:
        raise InvalidInput(f"target: dataset {ds.name!r} has no default target; name the target {what}")
    for field, name in [("target", target), *(("features", f) for f in features)]:
        if name not in known:
            raise InvalidInput(
                f"{field}: {what} {name!r} is not in dataset {ds.name!r}; it has {', '.join(known)}"
            )
    if target in features:
        raise InvalidInput(f"features: {target!r} is the target")
    return spec.model_copy(update={"target": target})


def list_runs(
    s: Session, status: RunStatus | None = None, limit: int = 100, *, access: Principal = SYSTEM
) -> list[Run]:
    q = only_visible(sa.select(RunRow).order_by(RunRow.id.desc()).limit(limit), RunRow.project_id, access)
    if status:
        q = q.where(RunRow.status == status)
    return [_entity(s, r) for r in s.scalars(q)]


def get_run(s: Session, run_id: int, *, access: Principal = SYSTEM) -> Run:
    return _entity(s, _row(s, run_id, access))


def cancel_run(s: Session, run_id: int, *, access: Principal = SYSTEM) -> Run:
    """A queued run is cancelled at once; a running one at its worker's next step.

    Conditional updates, so a worker claiming the run at the same moment (another
    transaction, on PostgreSQL) either finds it cancelled or sees the cancel request.
    """
    row = _row(s, run_id, access, "write")
    q = sa.update(RunRow).where(RunRow.id == run_id)
    done = s.execute(
        q.where(RunRow.status == "queued").values(
            status="cancelled", finished_at=utcnow(), cancel_requested=True
        )
    )
    if done.rowcount == 0:  # type: ignore[attr-defined]
        done = s.execute(q.where(RunRow.status == "running").values(cancel_requested=True))
    s.refresh(row)
    if done.rowcount == 0:  # type: ignore[attr-defined]
        raise Conflict(f"run {run_id} already {row.status}")
    return _entity(s, row)


def resume_run(s: Session, run_id: int, *, access: Principal = SYSTEM) -> Run:
    """Queue a cancelled or failed run again; its worker continues from the run's last
    checkpoint (or from the start if it never wrote one). A fresh attempt count."""
    row = _row(s, run_id, access, "write")
    done = s.execute(
        sa.update(RunRow)
        .where(RunRow.id == run_id, RunRow.status.in_(("cancelled", "failed")))
        .values(
            status="queued",
            error=None,
            cancel_requested=False,
            finished_at=None,
            attempt=1,
            worker_id=None,
            worker_pid=None,
            heartbeat_at=None,
            lease_expires_at=None,
        )
    )
    s.refresh(row)
    if done.rowcount == 0:  # type: ignore[attr-defined]
        raise Conflict(f"run {run_id} is {row.status}; only cancelled and failed runs resume")
    return _entity(s, row)


def get_metrics(
    s: Session, run_id: int, key: str | None = None, *, access: Principal = SYSTEM
) -> list[Metric]:
    _row(s, run_id, access)
    q = sa.select(MetricRow).where(MetricRow.run_id == run_id).order_by(MetricRow.id)
    if key:
        q = q.where(MetricRow.key == key)
    return [Metric.model_validate(m, from_attributes=True) for m in s.scalars(q)]


def get_logs(
    s: Session, run_id: int, after: int = 0, limit: int = 1000, *, access: Principal = SYSTEM
) -> list[LogLine]:
    _row(s, run_id, access)
    q = sa.select(RunLogRow).where(RunLogRow.run_id == run_id, RunLogRow.id > after).order_by(RunLogRow.id)
    return [LogLine.model_validate(r, from_attributes=True) for r in s.scalars(q.limit(limit))]


# --- worker side -------------------------------------------------------------------------


DEFAULT_LEASE_S = 30.0
"""How long a claim holds without a heartbeat; a worker renews it every few seconds."""


def new_worker_id(pid: int | None = None) -> str:
    """``host:pid:random``: the host and pid say where the worker ran (the reaper checks the
    pid of workers on its own host); the random part tells apart a pid the OS reused."""
    return f"{socket.gethostname()}:{pid if pid is not None else os.getpid()}:{secrets.token_hex(4)}"


def claim_run(
    s: Session, run_id: int, pid: int, worker_id: str | None = None, lease_s: float = DEFAULT_LEASE_S
) -> bool:
    """Atomically move a queued run to running, held by ``worker_id`` (default: a new id for
    ``pid`` on this host) for ``lease_s`` seconds; False if another worker has it or it was
    cancelled. A re-claimed run keeps the ``started_at`` of its first attempt."""
    now = utcnow()
    res = s.execute(
        sa.update(RunRow)
        .where(RunRow.id == run_id, RunRow.status == "queued")
        .values(
            status="running",
            worker_pid=pid,
            worker_id=worker_id or new_worker_id(pid),
            heartbeat_at=now,
            lease_expires_at=now + dt.timedelta(seconds=lease_s),
            started_at=sa.func.coalesce(RunRow.started_at, sa.literal(now, UTCDateTime())),
        )
    )
    return bool(res.rowcount == 1)  # type: ignore[attr-defined]


def record_progress(
    s: Session,
    run_id: int,
    step: int,
    total: int,
    metrics: dict[str, float],
    epoch: int | None = None,
    worker_id: str | None = None,
) -> bool:
    """Write progress and metrics; return True when the worker should stop: a cancel was
    requested, or (given ``worker_id``) the run is no longer this worker's, and then nothing
    is written."""
    q = sa.update(RunRow).where(RunRow.id == run_id)
    if worker_id is not None:
        q = q.where(RunRow.worker_id == worker_id, RunRow.status == "running")
    if s.execute(q.values(step=step, total_steps=total)).rowcount == 0:  # type: ignore[attr-defined]
        if worker_id is None:
            raise NotFound(f"run {run_id} not found")
        return True
    s.add_all(
        MetricRow(run_id=run_id, key=k, step=step, epoch=epoch, value=float(v)) for k, v in metrics.items()
    )
    s.flush()
    return bool(s.scalar(sa.select(RunRow.cancel_requested).where(RunRow.id == run_id)))


def holds_run(s: Session, run_id: int, worker_id: str) -> bool:
    """True while ``worker_id`` still runs ``run_id`` (not taken back, cancelled or ended)."""
    q = sa.select(RunRow.id).where(
        RunRow.id == run_id, RunRow.status == "running", RunRow.worker_id == worker_id
    )
    return s.scalar(q) is not None


def append_log(s: Session, run_id: int, line: str) -> None:
    s.add(RunLogRow(run_id=run_id, line=line))


def finish_run(
    s: Session,
    run_id: int,
    status: RunStatus,
    error: str | None = None,
    version_id: int | None = None,
    worker_id: str | None = None,
) -> bool:
    """End a running run; False (and nothing written) if it is no longer running, or (given
    ``worker_id``) no longer held by that worker: a worker whose run was taken back while it
    stalled must not end the attempt that replaced it."""
    q = sa.update(RunRow).where(RunRow.id == run_id, RunRow.status == "running")
    if worker_id is not None:
        q = q.where(RunRow.worker_id == worker_id)
    res = s.execute(
        q.values(
            status=status, error=error, version_id=version_id, finished_at=utcnow(), lease_expires_at=None
        )
    )
    return bool(res.rowcount == 1)  # type: ignore[attr-defined]


def fail_if_unfinished(s: Session, run_id: int, reason: str) -> bool:
    """Mark a run failed when its worker is gone without finishing it. True if it was."""
    res = s.execute(
        sa.update(RunRow)
        .where(RunRow.id == run_id, RunRow.status.in_(("queued", "running")))
        .values(status="failed", error=reason, finished_at=utcnow())
    )
    return bool(res.rowcount == 1)  # type: ignore[attr-defined]


def unfinished_runs(s: Session) -> list[Run]:
    q = sa.select(RunRow).where(RunRow.status.in_(("queued", "running"))).order_by(RunRow.id)
    return [_entity(s, r) for r in s.scalars(q)]
