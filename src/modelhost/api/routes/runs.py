from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from modelhost.api.auth import Caller, changes_require_role
from modelhost.api.deps import DB, Executor, Id, ProjectParam
from modelhost.training import service
from modelhost.training.spec import parse_spec

router = APIRouter(
    prefix="/api/v1/runs", tags=["runs"], dependencies=[changes_require_role("admin", "member")]
)


@router.post("", status_code=201)
def submit_run(
    db: DB, executor: Executor, caller: Caller, spec: dict[str, Any] = Body(), project: ProjectParam = None
) -> service.Run:
    """Queue a training run from a spec (the same document ``modelhost train spec.yaml`` sends),
    in its dataset's project."""
    with db.session() as s:
        run = service.submit_run(s, parse_spec(spec), access=caller, project=project)
    executor.launch(run.id)
    return run


@router.get("")
def list_runs(
    db: DB, caller: Caller, status: service.RunStatus | None = None, limit: int = 100
) -> list[service.Run]:
    with db.session() as s:
        return service.list_runs(s, status, max(1, min(limit, 1000)), access=caller)


@router.get("/{run_id}")
def show_run(run_id: Id, db: DB, caller: Caller) -> service.Run:
    with db.session() as s:
        return service.get_run(s, run_id, access=caller)


@router.post("/{run_id}/cancel")
def cancel_run(run_id: Id, db: DB, caller: Caller) -> service.Run:
    with db.session() as s:
        return service.cancel_run(s, run_id, access=caller)


@router.post("/{run_id}/resume")
def resume_run(run_id: Id, db: DB, executor: Executor, caller: Caller) -> service.Run:
    """Continue a cancelled or failed run from its last checkpoint."""
    with db.session() as s:
        run = service.resume_run(s, run_id, access=caller)
    executor.launch(run.id)
    return run


@router.get("/{run_id}/metrics")
def run_metrics(run_id: Id, db: DB, caller: Caller, key: str | None = None) -> list[service.Metric]:
    with db.session() as s:
        return service.get_metrics(s, run_id, key, access=caller)


@router.get("/{run_id}/logs")
def run_logs(run_id: Id, db: DB, caller: Caller, after: int = 0) -> list[service.LogLine]:
    """Log lines with id greater than ``after``; poll with the last id seen to follow."""
    with db.session() as s:
        return service.get_logs(s, run_id, after, access=caller)
