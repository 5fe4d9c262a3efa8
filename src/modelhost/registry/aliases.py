"""Aliases: movable names for versions (``production``), and resolving a version reference
(a number, an alias, or nothing for the latest) to a version."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from modelhost.auth.authz import SYSTEM, Principal
from modelhost.errors import InvalidInput, NotFound
from modelhost.names import check_name
from modelhost.registry.service import ModelVersion, get_model, get_version, get_version_by_id
from modelhost.registry.tables import ModelAliasRow

VersionRef = int | str | None
"""A version number, an alias, or None for the latest version."""


def _check_alias(alias: str) -> str:
    check_name("alias", alias)
    if alias.isdigit():
        raise InvalidInput(f"invalid alias {alias!r}: an alias cannot be a number (numbers name versions)")
    return alias


def set_alias(s: Session, model: str, alias: str, number: int, *, access: Principal = SYSTEM) -> ModelVersion:
    """Point ``alias`` at version ``number`` of ``model`` (creating or moving it)."""
    _check_alias(alias)
    get_model(s, model, access=access, action="write")
    version = get_version(s, model, number)
    row = s.scalar(
        sa.select(ModelAliasRow).where(
            ModelAliasRow.model_id == version.model_id, ModelAliasRow.alias == alias
        )
    )
    if row is None:
        s.add(ModelAliasRow(model_id=version.model_id, alias=alias, version_id=version.id))
    else:
        row.version_id = version.id
    s.flush()
    return version


def delete_alias(s: Session, model: str, alias: str, *, access: Principal = SYSTEM) -> None:
    m = get_model(s, model, access=access, action="write")
    row = s.scalar(
        sa.select(ModelAliasRow).where(ModelAliasRow.model_id == m.id, ModelAliasRow.alias == alias)
    )
    if row is None:
        raise NotFound(f"model {model!r} has no alias {alias!r}")
    s.delete(row)
    s.flush()


def list_aliases(s: Session, model: str, *, access: Principal = SYSTEM) -> dict[str, int]:
    """Alias -> version number."""
    m = get_model(s, model, access=access)
    rows = s.scalars(
        sa.select(ModelAliasRow).where(ModelAliasRow.model_id == m.id).order_by(ModelAliasRow.alias)
    )
    return {r.alias: get_version_by_id(s, r.version_id).number for r in rows}


def resolve_version(s: Session, model: str, ref: VersionRef, *, access: Principal = SYSTEM) -> ModelVersion:
    """The version a reference names: a number, an alias, or the latest when None."""
    if ref is None or isinstance(ref, int):
        return get_version(s, model, ref, access=access)
    m = get_model(s, model, access=access)
    row = s.scalar(sa.select(ModelAliasRow).where(ModelAliasRow.model_id == m.id, ModelAliasRow.alias == ref))
    if row is None:
        raise NotFound(f"model {model!r} has no alias {ref!r}")
    return get_version_by_id(s, row.version_id)
