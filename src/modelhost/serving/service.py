"""Deployments: a name bound to one or more model versions (a traffic split, an optional
shadow) and a runtime. Rows only; the DeploymentManager turns them into loaded runtimes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelhost.auth.authz import SYSTEM, Action, Principal, only_visible, require
from modelhost.auth.projects import project_name, target_project
from modelhost.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from modelhost.names import check_name
from modelhost.registry.aliases import VersionRef, resolve_version
from modelhost.registry.service import ModelVersion, get_version_by_id
from modelhost.registry.tables import ModelRow
from modelhost.serving.batcher import BatchingConfig
from modelhost.serving.tables import DeploymentRow

RuntimeName = Literal["torch", "onnx", "llm", "embedding"]
MAX_TARGETS = 8


class TrafficTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int | str
    """A version number or an alias."""
    weight: float = Field(gt=0, le=100)
    """Share of requests (weights are relative: 90 and 10 make a 90/10 canary)."""


class DeploySpec(BaseModel):
    """What a deployment serves and how: the body of PUT /api/v1/deployments/{name}."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    model: str
    """Registered model to serve."""
    version: int | str | None = None
    """Version number or alias; the model's latest when omitted. Or give ``traffic``."""
    traffic: list[TrafficTarget] | None = Field(None, min_length=1, max_length=MAX_TARGETS)
    """A split over versions, e.g. ``[{"version": 1, "weight": 90}, {"version": 2, "weight": 10}]``."""
    shadow: int | str | None = None
    """A version (or alias) that receives a copy of every request; its answers are logged and
    compared, never returned."""
    runtime: RuntimeName | None = None
    """torch | onnx | llm | embedding; default: by the version (llm for language models,
    embedding for encoders, onnx for imported graphs, torch for the rest)."""
    precision: Literal["fp32", "bf16", "int8"] = "fp32"
    """Language models only: weights in fp32, bf16 or int8 (weight-only)."""
    replicas: int = Field(1, ge=1, le=64)
    """Serving threads per version, sharing the loaded model."""
    batching: BatchingConfig = Field(default_factory=BatchingConfig)

    @model_validator(mode="after")
    def _one_way_to_name_versions(self) -> DeploySpec:
        if self.traffic is not None and self.version is not None:
            raise ValueError("give either 'version' or 'traffic', not both")
        refs = [t.version for t in self.traffic or []]
        if len(set(refs)) != len(refs):
            raise ValueError("each version may appear once in 'traffic'")
        if isinstance(self.version, int) and self.version < 1:
            raise ValueError("version numbers start at 1")
        return self

    def refs(self) -> list[tuple[VersionRef, float]]:
        return [(t.version, t.weight) for t in self.traffic] if self.traffic else [(self.version, 100.0)]

    def mentions(self, alias: str) -> bool:
        return alias in [r for r, _ in self.refs()] or self.shadow == alias


class Target(BaseModel):
    version: int
    version_id: int
    weight: float


class Deployment(BaseModel):
    id: int
    name: str
    project: str
    project_id: int
    model: str
    version: int
    """The version with the largest share of traffic."""
    version_id: int
    targets: list[Target]
    shadow: Target | None
    runtime: RuntimeName
    replicas: int
    batching: BatchingConfig
    spec: DeploySpec
    can_roll_back: bool
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class Resolved:
    """A spec's version references resolved against the registry."""

    targets: list[tuple[ModelVersion, float]]
    shadow: ModelVersion | None
    project_id: int
    """The deployment's project, which is also its model's."""


def _target(s: Session, version_id: int, weight: float) -> Target:
    return Target(version=get_version_by_id(s, version_id).number, version_id=version_id, weight=weight)


def _entity(s: Session, row: DeploymentRow) -> Deployment:
    primary = get_version_by_id(s, row.version_id)
    targets = [_target(s, t["version_id"], t["weight"]) for t in row.targets] or [
        Target(version=primary.number, version_id=primary.id, weight=100.0)
    ]
    spec = (
        DeploySpec.model_validate(row.spec)
        if row.spec
        else DeploySpec(model=primary.model, version=primary.number)
    )
    return Deployment(
        id=row.id,
        name=row.name,
        project=project_name(s, row.project_id),
        project_id=row.project_id,
        model=primary.model,
        version=primary.number,
        version_id=primary.id,
        targets=targets,
        shadow=_target(s, row.shadow_version_id, 0.0) if row.shadow_version_id else None,
        runtime=row.runtime,
        replicas=row.replicas,
        batching=BatchingConfig.model_validate(row.batching),
        spec=spec,
        can_roll_back=row.previous_spec is not None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _row(s: Session, name: str) -> DeploymentRow | None:
    return s.scalar(sa.select(DeploymentRow).where(DeploymentRow.name == name))


def _checked_row(s: Session, name: str, access: Principal, action: Action) -> DeploymentRow:
    """The deployment ``name`` if ``access`` may do ``action`` on it (NotFound if it may not see it)."""
    row = _row(s, name)
    if row is None:
        raise NotFound(f"deployment {name!r} not found")
    require(access, row.project_id, action, f"deployment {name!r}")
    return row


def resolve(
    s: Session,
    name: str,
    spec: DeploySpec,
    replace: bool = True,
    *,
    access: Principal = SYSTEM,
    project: str | None = None,
) -> Resolved:
    """The versions a deploy of ``name`` would serve, and its project (an existing
    deployment's, else the one named, else its model's); checks the name, that ``access``
    may deploy there and, without ``replace``, that the deployment does not exist yet."""
    check_name("deployment", name)
    row = _row(s, name)
    if row is not None and not replace:
        raise AlreadyExists(f"deployment {name!r} already exists")
    if row is not None:
        require(access, row.project_id, "write", f"deployment {name!r}")
    targets = [(resolve_version(s, spec.model, ref, access=access), weight) for ref, weight in spec.refs()]
    model_project = s.get_one(ModelRow, targets[0][0].model_id).project_id
    if row is not None and model_project != row.project_id:
        raise InvalidInput(f"model {spec.model!r} is in another project than deployment {name!r}")
    project_id = row.project_id if row is not None else target_project(s, access, project, model_project)
    ids = [v.id for v, _ in targets]
    if len(set(ids)) != len(ids):
        raise InvalidInput("traffic names the same version twice (through an alias?)")
    shadow = resolve_version(s, spec.model, spec.shadow) if spec.shadow is not None else None
    if shadow is not None and shadow.id in ids:
        raise InvalidInput(f"the shadow version {shadow.number} also takes live traffic")
    return Resolved(targets=targets, shadow=shadow, project_id=project_id)


def deploy(
    s: Session, name: str, spec: DeploySpec, resolved: Resolved, replace: bool = True
) -> tuple[Deployment, bool]:
    """Create the deployment, or (``replace``) point an existing one at other versions.
    Returns the deployment and whether it is new."""
    row = _row(s, name)
    if row is not None and not replace:
        raise AlreadyExists(f"deployment {name!r} already exists")
    created = row is None
    runtime = spec.runtime or "torch"  # the manager picks by the version; a direct caller gets torch
    primary = max(resolved.targets, key=lambda t: t[1])[0]
    if row is None:
        row = DeploymentRow(
            name=name,
            model_id=primary.model_id,
            version_id=primary.id,
            runtime=runtime,
            project_id=resolved.project_id,
        )
    else:
        row.previous_spec = row.spec or None
    row.model_id, row.version_id, row.runtime = primary.model_id, primary.id, runtime
    row.replicas, row.batching = spec.replicas, spec.batching.model_dump()
    row.targets = [{"version_id": v.id, "weight": w} for v, w in resolved.targets]
    row.shadow_version_id = resolved.shadow.id if resolved.shadow else None
    row.spec = spec.model_dump(mode="json")
    try:
        with s.begin_nested():
            s.add(row)
    except IntegrityError as e:
        raise AlreadyExists(f"deployment {name!r} already exists") from e
    return _entity(s, row), created


def previous_spec(s: Session, name: str, *, access: Principal = SYSTEM) -> DeploySpec:
    """The spec before the last change, for rollback."""
    row = _checked_row(s, name, access, "write")
    if row.previous_spec is None:
        raise Conflict(f"deployment {name!r} has no earlier state to roll back to")
    return DeploySpec.model_validate(row.previous_spec)


def following(s: Session, model: str, alias: str) -> list[Deployment]:
    """Deployments of ``model`` whose spec names ``alias``."""
    return [
        d
        for d in list_deployments(s)
        if d.model == model and d.spec.model == model and d.spec.mentions(alias)
    ]


def list_deployments(s: Session, *, access: Principal = SYSTEM) -> list[Deployment]:
    q = only_visible(sa.select(DeploymentRow).order_by(DeploymentRow.id), DeploymentRow.project_id, access)
    return [_entity(s, r) for r in s.scalars(q)]


def get_deployment(s: Session, name: str, *, access: Principal = SYSTEM) -> Deployment:
    return _entity(s, _checked_row(s, name, access, "read"))


def delete_deployment(s: Session, name: str, *, access: Principal = SYSTEM) -> None:
    """Project admins only; its inference-only keys go with it."""
    row = _checked_row(s, name, access, "delete")
    s.delete(row)
    s.flush()
