"""Sweeps: one spec with a search space becomes one run per trial; the best trial is the one
with the best value of the chosen metric. Grid search tries every combination; random
search draws ``trials`` points (seeded, so a sweep is reproducible).

The space maps dotted spec paths to values: a list is a set of choices,
``{low, high, log}`` a range (integers when both ends are integers).
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import math
import random
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy.orm import Session

from modelhost.auth.authz import SYSTEM, Principal, only_visible, require
from modelhost.auth.projects import project_name
from modelhost.errors import InvalidInput, NotFound, describe_validation_errors
from modelhost.training import service as runs
from modelhost.training.compare import final_metrics
from modelhost.training.metrics import lower_is_better
from modelhost.training.spec import TrainSpec, parse_spec
from modelhost.training.tables import RunRow, SweepRow

MAX_TRIALS = 256


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    def draw(self, rng: random.Random) -> float | int:
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        if float(self.low).is_integer() and float(self.high).is_integer():
            return round(value)
        return value


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    method: Literal["grid", "random"] = "grid"
    space: dict[str, list[Any] | Range] = Field(min_length=1)
    """Dotted spec paths (``optimizer.lr``, ``model.hidden_sizes``) to choices or ranges."""
    trials: int | None = Field(None, ge=1, le=MAX_TRIALS)
    """Random search: how many points to draw. Grid search: at most this many (default: all)."""
    metric: str = "val_loss"
    """The epoch metric that ranks the trials (its last value in each run)."""
    mode: Literal["auto", "min", "max"] = "auto"
    seed: int = 0

    @model_validator(mode="after")
    def _searchable(self) -> SweepSpec:
        for path, values in self.space.items():
            if isinstance(values, list) and not values:
                raise ValueError(f"space.{path}: give at least one value")
            if self.method == "grid" and isinstance(values, Range):
                raise ValueError(f"space.{path}: a grid needs a list of values, not a range")
        if self.method == "random" and self.trials is None:
            raise ValueError("trials: random search needs a number of trials")
        return self

    @property
    def lower_is_better(self) -> bool:
        return lower_is_better(self.metric) if self.mode == "auto" else self.mode == "min"


def _set(spec: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = spec
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise InvalidInput(f"sweep.space.{path}: {key!r} is not a section of the spec")
        node = child
    node[leaf] = value


def points(sweep: SweepSpec) -> list[dict[str, Any]]:
    """The trials' parameter sets, in order."""
    if sweep.method == "grid":
        keys = list(sweep.space)
        grid = itertools.product(*(sweep.space[k] for k in keys))
        combos = [dict(zip(keys, values, strict=True)) for values in itertools.islice(grid, MAX_TRIALS + 1)]
        if len(combos) > MAX_TRIALS and sweep.trials is None:
            raise InvalidInput(f"sweep: the grid has more than {MAX_TRIALS} points; set trials or shrink it")
        return combos[: sweep.trials or MAX_TRIALS]
    rng = random.Random(sweep.seed)
    trials = sweep.trials or 1

    def draw(values: list[Any] | Range) -> Any:
        return values.draw(rng) if isinstance(values, Range) else copy.deepcopy(rng.choice(values))

    return [{k: draw(v) for k, v in sweep.space.items()} for _ in range(trials)]


def expand(base: dict[str, Any], sweep: SweepSpec) -> list[tuple[dict[str, Any], TrainSpec]]:
    """Each trial's parameters and its validated spec; InvalidInput names the trial and field."""
    trials = []
    for i, params in enumerate(points(sweep), start=1):
        spec = copy.deepcopy(base)
        spec.pop("sweep", None)
        for path, value in params.items():
            _set(spec, path, value)
        if "name" in spec or "register_as" in spec or "dataset" in spec:
            spec["name"] = f"{spec.get('name') or spec.get('register_as') or spec['dataset']}-trial-{i}"
        try:
            trials.append((params, parse_spec(spec)))
        except InvalidInput as e:
            raise InvalidInput(f"sweep trial {i} ({params}): {e.message}") from e
    return trials


def best(values: dict[int, float | None], sweep: SweepSpec) -> int | None:
    """The run id with the best metric value among those that have one."""
    scored = {run: v for run, v in values.items() if v is not None and math.isfinite(v)}
    if not scored:
        return None
    pick = min if sweep.lower_is_better else max
    return pick(scored, key=lambda run: scored[run])


# --- the store ---------------------------------------------------------------------------


class Trial(BaseModel):
    run_id: int
    status: str
    params: dict[str, Any]
    value: float | None
    """The run's last value of the sweep's metric, once it has one."""


class Sweep(BaseModel):
    id: int
    name: str
    project: str
    metric: str
    lower_is_better: bool
    trials: list[Trial]
    best_run_id: int | None
    created_at: dt.datetime


def parse_sweep(document: dict[str, Any]) -> tuple[SweepSpec, list[tuple[dict[str, Any], TrainSpec]]]:
    """The sweep section of a spec document and every trial's spec; InvalidInput names the field."""
    raw = document.get("sweep")
    if not isinstance(raw, dict):
        raise InvalidInput("sweep: a sweep document needs a 'sweep' section with a 'space'")
    try:
        sweep = SweepSpec.model_validate(raw)
    except ValidationError as e:
        raise InvalidInput("invalid sweep: " + describe_validation_errors(e.errors())) from e
    return sweep, expand(document, sweep)


def submit_sweep(
    s: Session, document: dict[str, Any], *, access: Principal = SYSTEM, project: str | None = None
) -> tuple[Sweep, list[runs.Run]]:
    """Queue one run per trial (all or none: one transaction) and record the sweep, in its
    runs' project (see ``submit_run``)."""
    sweep, trials = parse_sweep(document)
    queued = [runs.submit_run(s, spec, access=access, project=project) for _, spec in trials]
    base = trials[0][1]
    row = SweepRow(
        project_id=s.get_one(RunRow, queued[0].id).project_id,
        name=str(document.get("name") or base.model_name),
        spec=document,
        metric=sweep.metric,
        lower_is_better=sweep.lower_is_better,
        trials=[{"run_id": r.id, "params": p} for r, (p, _) in zip(queued, trials, strict=True)],
    )
    s.add(row)
    s.flush()
    return _entity(s, row), queued


def _entity(s: Session, row: SweepRow) -> Sweep:
    ids = [t["run_id"] for t in row.trials]
    status = dict(s.execute(sa.select(RunRow.id, RunRow.status).where(RunRow.id.in_(ids))).tuples().all())
    metrics = final_metrics(s, ids)
    trials = [
        Trial(
            run_id=t["run_id"],
            status=status[t["run_id"]],
            params=t["params"],
            value=metrics[t["run_id"]].get(row.metric),
        )
        for t in row.trials
    ]
    ranking = SweepSpec(space={"seed": [0]}, metric=row.metric, mode="min" if row.lower_is_better else "max")
    finished = {t.run_id: t.value for t in trials if t.status == "succeeded"}
    return Sweep(
        id=row.id,
        name=row.name,
        project=project_name(s, row.project_id),
        metric=row.metric,
        lower_is_better=row.lower_is_better,
        trials=trials,
        best_run_id=best(finished, ranking),
        created_at=row.created_at,
    )


def get_sweep(s: Session, sweep_id: int, *, access: Principal = SYSTEM) -> Sweep:
    row = s.get(SweepRow, sweep_id)
    if row is None:
        raise NotFound(f"sweep {sweep_id} not found")
    require(access, row.project_id, "read", f"sweep {sweep_id}")
    return _entity(s, row)


def list_sweeps(s: Session, limit: int = 100, *, access: Principal = SYSTEM) -> list[Sweep]:
    q = sa.select(SweepRow).order_by(SweepRow.id.desc()).limit(limit)
    rows = s.scalars(only_visible(q, SweepRow.project_id, access))
    return [_entity(s, r) for r in rows]
