"""Deployments: a name bound to a model version and a runtime. Rows only; the
DeploymentManager turns them into loaded runtimes."""

from __future__ import annotations

import datetime as dt
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelhost.errors import AlreadyExists, NotFound
from modelhost.names import check_name
from modelhost.registry.service import ModelVersion, get_version, get_version_by_id
from modelhost.serving.tables import DeploymentRow

RuntimeName = Literal["torch"]


class Deployment(BaseModel):
    id: int
    name: str
    model: str
    version: int
    version_id: int
    runtime: RuntimeName
    created_at: dt.datetime
    updated_at: dt.datetime


def _entity(s: Session, row: DeploymentRow) -> Deployment:
    v = get_version_by_id(s, row.version_id)
    return Deployment(
        id=row.id,
        name=row.name,
        model=v.model,
        version=v.number,
        version_id=v.id,
        runtime=row.runtime,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _row(s: Session, name: str) -> DeploymentRow | None:
    return s.scalar(sa.select(DeploymentRow).where(DeploymentRow.name == name))


def resolve_target(
    s: Session, name: str, model: str, version: int | None = None, replace: bool = True
) -> ModelVersion:
    """The version a deploy of ``name`` would serve; checks the name and, without
    ``replace``, that the deployment does not exist yet."""
    check_name("deployment", name)
    if not replace and _row(s, name) is not None:
        raise AlreadyExists(f"deployment {name!r} already exists")
    return get_version(s, model, version)


def deploy(
    s: Session,
    name: str,
    model: str,
    version: int | None = None,
    runtime: RuntimeName = "torch",
    replace: bool = True,
) -> tuple[Deployment, bool]:
    """Create the deployment, or (``replace``) point an existing one at another version.

    ``version`` None means the model's latest. Returns the deployment and whether it is new.
    """
    v = resolve_target(s, name, model, version, replace)
    row = _row(s, name)
    created = row is None
    if row is None:
        row = DeploymentRow(name=name, model_id=v.model_id, version_id=v.id, runtime=runtime)
    row.model_id, row.version_id, row.runtime = v.model_id, v.id, runtime
    try:
        with s.begin_nested():
            s.add(row)
    except IntegrityError as e:
        raise AlreadyExists(f"deployment {name!r} already exists") from e
    return _entity(s, row), created


def list_deployments(s: Session) -> list[Deployment]:
    return [_entity(s, r) for r in s.scalars(sa.select(DeploymentRow).order_by(DeploymentRow.id))]


def get_deployment(s: Session, name: str) -> Deployment:
    row = _row(s, name)
    if row is None:
        raise NotFound(f"deployment {name!r} not found")
    return _entity(s, row)


def delete_deployment(s: Session, name: str) -> None:
    row = _row(s, name)
    if row is None:
        raise NotFound(f"deployment {name!r} not found")
    s.delete(row)
    s.flush()
