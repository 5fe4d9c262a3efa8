"""Runs side by side: the spec settings in which they differ, and their final metrics."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import Session

from modelhost.auth.authz import SYSTEM, Principal
from modelhost.errors import InvalidInput
from modelhost.training import service as runs
from modelhost.training.tables import MetricRow


class RunSummary(BaseModel):
    id: int
    name: str
    status: str
    metrics: dict[str, float]
    """The last value of each metric the run logged."""
    params: dict[str, Any]
    """The spec settings, dotted (``optimizer.lr``), that differ between the compared runs."""


class Comparison(BaseModel):
    runs: list[RunSummary]
    params: list[str]
    """The differing settings, in a stable order."""
    metrics: list[str]
    """Every metric any of the runs logged."""


def flatten(spec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in spec.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def compare(runs: list[tuple[int, str, str, dict[str, Any], dict[str, float]]]) -> Comparison:
    """``runs``: (id, name, status, spec, final metrics) of each run, in the order to show."""
    flat = [flatten(spec) for _, _, _, spec, _ in runs]
    keys = sorted({k for f in flat for k in f})
    differing = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1 and k != "name"]
    return Comparison(
        runs=[
            RunSummary(id=i, name=n, status=st, metrics=m, params={k: f.get(k) for k in differing})
            for (i, n, st, _, m), f in zip(runs, flat, strict=True)
        ],
        params=differing,
        metrics=sorted({k for *_, m in runs for k in m}),
    )


def final_metrics(s: Session, run_ids: list[int]) -> dict[int, dict[str, float]]:
    """The last value each run logged for each of its metrics."""
    last = (
        sa.select(MetricRow.run_id, MetricRow.key, sa.func.max(MetricRow.id).label("id"))
        .where(MetricRow.run_id.in_(run_ids))
        .group_by(MetricRow.run_id, MetricRow.key)
        .subquery()
    )
    out: dict[int, dict[str, float]] = {r: {} for r in run_ids}
    for run_id, key, value in s.execute(
        sa.select(MetricRow.run_id, MetricRow.key, MetricRow.value).join(last, MetricRow.id == last.c.id)
    ):
        out[run_id][key] = value
    return out


def compare_runs(s: Session, run_ids: list[int], *, access: Principal = SYSTEM) -> Comparison:
    """Runs side by side, in the order given; NotFound names a missing run (or one that
    ``access`` may not see)."""
    if not 2 <= len(run_ids) <= 50:
        raise InvalidInput(f"ids: compare takes 2 to 50 runs, got {len(run_ids)}")
    found = [runs.get_run(s, i, access=access) for i in run_ids]
    metrics = final_metrics(s, run_ids)
    return compare([(r.id, r.name, r.status, r.spec, metrics[r.id]) for r in found])
