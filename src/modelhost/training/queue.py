"""The run queue in the metadata store: workers claim queued runs atomically, hold them by a
lease they renew with heartbeats, and a reaper takes back runs whose worker is gone.

Any process that shares the database and the artifact store can be a worker (``modelhost
worker``, or the server's local executor). Invariants:

- a run is executed by one worker at a time: claims are conditional UPDATEs of a queued row
  (on PostgreSQL the candidate is picked ``FOR UPDATE SKIP LOCKED``, so concurrent claimers
  take different runs without waiting; on SQLite every session's ``BEGIN IMMEDIATE``
  serialises them), and every later write of the worker is conditional on its ``worker_id``;
- a running run whose lease expired, or whose worker process on this host is gone, goes back
  to the queue as ``attempt + 1``, or fails after ``max_attempts``: never "running" forever.

Leases compare wall clocks of different hosts: keep them synchronised (NTP), and the lease
several heartbeats long.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator
from sqlalchemy.orm import Session

from modelhost.db import utcnow
from modelhost.errors import InvalidInput, describe_validation_errors
from modelhost.training.service import (
    DEFAULT_LEASE_S,
    Run,
    RunStatus,
    append_log,
    claim_run,
    get_run,
)
from modelhost.training.tables import RunRow

DEFAULT_HEARTBEAT_S = 5.0
"""How often a worker renews its lease; a sixth of DEFAULT_LEASE_S, so a few missed beats
(a slow database, a long garbage collection) don't cost the run."""
DEFAULT_MAX_ATTEMPTS = 3
"""Attempts a run gets before a lost worker fails it instead of re-queueing it."""

Beat = Literal["ok", "cancel", "lost"]


class QueueOptions(BaseModel, frozen=True, use_attribute_docstrings=True):
    """How workers hold runs and how often they look for more (``modelhost worker`` flags)."""

    lease_s: float = Field(DEFAULT_LEASE_S, gt=0)
    """A claim lasts this long without a heartbeat; then the run goes back to the queue."""
    heartbeat_s: float = Field(DEFAULT_HEARTBEAT_S, gt=0, validate_default=True)  # checked against lease_s
    """How often a working worker renews its lease."""
    max_attempts: int = Field(DEFAULT_MAX_ATTEMPTS, ge=1)
    """Attempts a run gets before a lost worker fails it."""
    poll_s: float = Field(2.0, gt=0)
    """How long an idle worker waits before looking at the queue again."""

    @field_validator("heartbeat_s")
    @classmethod
    def _beats_fit_in_the_lease(cls, v: float, info: ValidationInfo) -> float:
        lease = info.data.get("lease_s")  # absent when lease_s itself was invalid
        if lease is not None and v * 2 > lease:
            raise ValueError(
                f"must be at most half of lease_s ({lease:g}), or one late heartbeat loses the run"
            )
        return v

    @classmethod
    def parse(cls, **values: object) -> QueueOptions:
        """Options from flags; None means the default. InvalidInput names each bad one."""
        try:
            return cls.model_validate({k: v for k, v in values.items() if v is not None})
        except ValidationError as e:
            raise InvalidInput("invalid worker options: " + describe_validation_errors(e.errors())) from e


def worker_pid(worker_id: str) -> int:
    """The pid part of a ``host:pid:random`` worker id."""
    return int(worker_id.rsplit(":", 2)[1])


def worker_host(worker_id: str | None) -> str | None:
    return worker_id.rsplit(":", 2)[0] if worker_id else None


def pid_alive(pid: int | None) -> bool:
    """True when a process with this pid exists on this host (signal 0 probes, sends nothing)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def claim_next(s: Session, worker_id: str, lease_s: float = DEFAULT_LEASE_S) -> Run | None:
    """Claim the oldest queued run for ``worker_id`` (``host:pid:random``); None if none is queued."""
    oldest = (
        sa.select(RunRow.id)
        .where(RunRow.status == "queued")
        .order_by(RunRow.id)
        .limit(1)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite ignores it (BEGIN IMMEDIATE serialises)
    )
    run_id = s.scalar(oldest)
    # Locked (or serialised), so the claim can't miss; it stays conditional all the same.
    if run_id is None or not claim_run(s, run_id, worker_pid(worker_id), worker_id, lease_s):
        return None
    return get_run(s, run_id)


def heartbeat(s: Session, run_id: int, worker_id: str, lease_s: float = DEFAULT_LEASE_S) -> Beat:
    """Renew the lease: "ok" to carry on, "cancel" when a cancel was requested, "lost" when the
    run is no longer this worker's (taken back by the reaper, ended elsewhere): stop, write nothing."""
    now = utcnow()
    res = s.execute(
        sa.update(RunRow)
        .where(RunRow.id == run_id, RunRow.worker_id == worker_id, RunRow.status == "running")
        .values(heartbeat_at=now, lease_expires_at=now + dt.timedelta(seconds=lease_s))
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return "lost"
    cancel = s.scalar(sa.select(RunRow.cancel_requested).where(RunRow.id == run_id))
    return "cancel" if cancel else "ok"


def release_run(s: Session, run_id: int, worker_id: str, reason: str) -> bool:
    """Give a run back to the queue as the same attempt (a worker shutting down cleanly)."""
    res = s.execute(_take_back(run_id, worker_id).values(**_unclaimed(), status="queued"))
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return False
    append_log(s, run_id, f"worker {worker_id} released the run: {reason}; back in the queue")
    return True


def fail_unclaimed(s: Session, run_id: int, attempt: int, reason: str) -> bool:
    """Fail a run still queued at ``attempt``: the worker started for it died before claiming
    it (a broken environment), and starting another one would fail alike."""
    res = s.execute(
        sa.update(RunRow)
        .where(RunRow.id == run_id, RunRow.status == "queued", RunRow.attempt == attempt)
        .values(status="failed", error=reason, finished_at=utcnow())
    )
    return bool(res.rowcount == 1)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Reaped:
    """What the reaper did to one run: re-queued it, failed it, or ended it as cancelled."""

    run_id: int
    status: RunStatus
    reason: str


def reap(
    s: Session,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    now: dt.datetime | None = None,
    host: str | None = None,
) -> list[Reaped]:
    """Take back every running run whose worker is gone: its lease expired (any host), or its
    worker ran on ``host`` (default this one) and its pid no longer exists (no need to wait
    for the lease). Each goes back to the queue as attempt + 1 with a log line saying why;
    after ``max_attempts`` it fails with the reason; if a cancel was requested it ends
    cancelled. Conditional updates: a worker whose heartbeat lands first keeps its run."""
    now, host = now or utcnow(), host or socket.gethostname()
    done = []
    for row in s.scalars(sa.select(RunRow).where(RunRow.status == "running").order_by(RunRow.id)).all():
        why = _lost(row, now, host)
        if why is not None and (reaped := _reap_one(s, row, why, now, max_attempts)) is not None:
            done.append(reaped)
    return done


def _expired(row: RunRow, now: dt.datetime) -> bool:
    return row.lease_expires_at is None or row.lease_expires_at < now  # None: claimed before leases


def _lost(row: RunRow, now: dt.datetime, host: str) -> str | None:
    """Why ``row``'s worker counts as gone, or None while it may still be working."""
    if _expired(row, now):
        return f"lease expired at {_when(row.lease_expires_at)}"
    if worker_host(row.worker_id) == host and not pid_alive(row.worker_pid):
        return f"worker process {row.worker_pid} on {host} is gone"
    return None


def _reap_one(s: Session, row: RunRow, why: str, now: dt.datetime, max_attempts: int) -> Reaped | None:
    seen = f"last seen {_when(row.heartbeat_at or row.started_at)} as {row.worker_id or 'an unknown worker'}"
    q = _take_back(row.id, row.worker_id)
    if _expired(row, now):  # a heartbeat may have renewed it since we read the row
        q = q.where(sa.or_(RunRow.lease_expires_at.is_(None), RunRow.lease_expires_at < now))
    values: dict[str, object]
    if row.cancel_requested:
        status: RunStatus = "cancelled"
        reason = f"cancelled; its worker is gone ({why}, {seen})"
        values = {"status": status, "finished_at": now, "lease_expires_at": None}
    elif row.attempt >= max_attempts:
        status = "failed"
        reason = f"worker lost {row.attempt} times; {seen} ({why})"
        values = {"status": status, "error": reason, "finished_at": now, "lease_expires_at": None}
    else:
        status = "queued"
        reason = f"attempt {row.attempt} lost: {why}, {seen}; re-queued as attempt {row.attempt + 1}"
        values = {**_unclaimed(), "status": status, "attempt": row.attempt + 1}
    if s.execute(q.values(**values)).rowcount != 1:  # type: ignore[attr-defined]
        return None
    append_log(s, row.id, reason if status != "failed" else f"run failed: {reason}")
    return Reaped(row.id, status, reason)


def _take_back(run_id: int, worker_id: str | None) -> sa.Update:
    """UPDATE of a run still running under ``worker_id``: nothing happens if it moved on."""
    held_by = RunRow.worker_id.is_(None) if worker_id is None else RunRow.worker_id == worker_id
    return sa.update(RunRow).where(RunRow.id == run_id, RunRow.status == "running", held_by)


def _unclaimed() -> dict[str, None]:
    return {"worker_id": None, "worker_pid": None, "lease_expires_at": None}


def _when(t: dt.datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC") if t else "never"
