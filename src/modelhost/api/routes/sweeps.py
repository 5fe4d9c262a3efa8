from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel

from modelhost.api.auth import Caller, changes_require_role
from modelhost.api.deps import DB, Executor, Id, ProjectParam
from modelhost.training import compare, sweeps
from modelhost.training.service import Run

router = APIRouter(prefix="/api/v1", tags=["sweeps"], dependencies=[changes_require_role("admin", "member")])


class SubmittedSweep(BaseModel):
    sweep: sweeps.Sweep
    runs: list[Run]


@router.post("/sweeps", status_code=201)
def submit_sweep(
    db: DB,
    executor: Executor,
    caller: Caller,
    document: dict[str, Any] = Body(),
    project: ProjectParam = None,
) -> SubmittedSweep:
    """Queue one run per trial of the spec's ``sweep`` section (grid or random search)."""
    with db.session() as s:
        sweep, queued = sweeps.submit_sweep(s, document, access=caller, project=project)
    for run in queued:
        executor.launch(run.id)
    return SubmittedSweep(sweep=sweep, runs=queued)


@router.get("/sweeps")
def list_sweeps(db: DB, caller: Caller) -> list[sweeps.Sweep]:
    with db.session() as s:
        return sweeps.list_sweeps(s, access=caller)


@router.get("/sweeps/{sweep_id}")
def show_sweep(sweep_id: Id, db: DB, caller: Caller) -> sweeps.Sweep:
    """The trials with their status and metric value, and the best finished one."""
    with db.session() as s:
        return sweeps.get_sweep(s, sweep_id, access=caller)


@router.get("/runs/compare")
def compare_runs(
    db: DB, caller: Caller, ids: Annotated[list[int], Query(min_length=2, max_length=50)]
) -> compare.Comparison:
    """Runs side by side: ``?ids=3&ids=5``; the settings that differ and the final metrics."""
    with db.session() as s:
        return compare.compare_runs(s, ids, access=caller)
