"""Projects and their members. Every dataset, run, sweep, model and deployment belongs to one
project; a user's membership gives their role in it."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelhost.auth.authz import Principal, Role, require
from modelhost.auth.tables import MembershipRow, ProjectRow, UserRow
from modelhost.errors import AlreadyExists, Conflict, Forbidden, InvalidInput, NotFound
from modelhost.names import check_name

DEFAULT_PROJECT = "default"
"""Created by the migration; holds what existed before projects, and what is created without one."""
RESOURCE_TABLES = ("datasets", "runs", "sweeps", "models", "deployments")


class Member(BaseModel):
    user: str
    role: Role


class Project(BaseModel):
    id: int
    name: str
    created_at: dt.datetime
    role: Role | None = None
    """The caller's role in the project."""


def _what(name: str) -> str:
    return f"project {name!r}"


def project_row(s: Session, name: str) -> ProjectRow:
    row = s.scalar(sa.select(ProjectRow).where(ProjectRow.name == name))
    if row is None:
        raise NotFound(f"{_what(name)} not found")
    return row


def visible_project(s: Session, access: Principal, name: str) -> ProjectRow:
    """The project ``name`` if ``access`` may see it, else NotFound (as if it did not exist)."""
    row = project_row(s, name)
    require(access, row.id, "read", _what(name))
    return row


def project_name(s: Session, project_id: int) -> str:
    return s.get_one(ProjectRow, project_id).name


def target_project(s: Session, access: Principal, name: str | None, parent: int | None = None) -> int:
    """The project a new resource goes into, checked for ``write``: the one named, else the
    project of the resource it derives from (``parent``), else the key's, else "default".
    A resource and what it derives from share a project."""
    if name is not None:
        project_id = visible_project(s, access, name).id
    elif parent is not None:
        project_id = parent
    elif access.project_id is not None:
        project_id = access.project_id
    else:
        project_id = project_row(s, DEFAULT_PROJECT).id
    require(access, project_id, "write", _what(project_name(s, project_id)))
    if parent is not None and parent != project_id:
        raise InvalidInput(
            f"project: what this derives from is in project {project_name(s, parent)!r}, not {name!r}"
        )
    return project_id


def _entity(row: ProjectRow, access: Principal) -> Project:
    return Project(id=row.id, name=row.name, created_at=row.created_at, role=access.role_in(row.id))


def create_project(s: Session, access: Principal, name: str) -> Project:
    """Platform admins only; the creating user becomes the project's admin."""
    if not access.is_admin:
        raise Forbidden("creating a project needs a platform admin's key")
    check_name("project", name)
    row = ProjectRow(name=name)
    try:
        with s.begin_nested():
            s.add(row)
    except IntegrityError as e:
        raise AlreadyExists(f"{_what(name)} already exists") from e
    if access.user_id is not None:
        s.add(MembershipRow(user_id=access.user_id, project_id=row.id, role="admin"))
        s.flush()
    return _entity(row, access)


def list_projects(s: Session, access: Principal) -> list[Project]:
    rows = s.scalars(sa.select(ProjectRow).order_by(ProjectRow.id))
    return [_entity(r, access) for r in rows if access.role_in(r.id) is not None]


def get_project(s: Session, access: Principal, name: str) -> Project:
    return _entity(visible_project(s, access, name), access)


def delete_project(s: Session, access: Principal, name: str) -> None:
    """Project admins; refused while the project holds any resource, and for "default"."""
    row = visible_project(s, access, name)
    require(access, row.id, "admin", _what(name))
    if name == DEFAULT_PROJECT:
        raise Conflict(f"{_what(name)} cannot be deleted: it holds what is created without a project")
    for table in RESOURCE_TABLES:
        count = s.scalar(sa.text(f"SELECT count(*) FROM {table} WHERE project_id = :p").bindparams(p=row.id))
        if count:
            raise Conflict(f"{_what(name)} still holds {count} of its {table}; delete them first")
    s.delete(row)
    s.flush()


def _user_id(s: Session, user: str) -> int:
    user_id = s.scalar(sa.select(UserRow.id).where(UserRow.name == user))
    if user_id is None:
        raise NotFound(f"user {user!r} not found")
    return user_id


def list_members(s: Session, access: Principal, project: str) -> list[Member]:
    row = visible_project(s, access, project)
    q = (
        sa.select(UserRow.name, MembershipRow.role)
        .join(MembershipRow, MembershipRow.user_id == UserRow.id)
        .where(MembershipRow.project_id == row.id)
        .order_by(UserRow.name)
    )
    return [Member(user=u, role=r) for u, r in s.execute(q)]


def set_member(s: Session, access: Principal, project: str, user: str, role: Role) -> Member:
    """Add ``user`` to ``project`` with ``role``, or change their role (project admins)."""
    row = visible_project(s, access, project)
    require(access, row.id, "admin", _what(project))
    user_id = _user_id(s, user)
    member = s.scalar(
        sa.select(MembershipRow).where(MembershipRow.project_id == row.id, MembershipRow.user_id == user_id)
    )
    if member is None:
        s.add(MembershipRow(user_id=user_id, project_id=row.id, role=role))
    else:
        member.role = role
    s.flush()
    return Member(user=user, role=role)


def remove_member(s: Session, access: Principal, project: str, user: str) -> None:
    row = visible_project(s, access, project)
    require(access, row.id, "admin", _what(project))
    done = s.execute(
        sa.delete(MembershipRow).where(
            MembershipRow.project_id == row.id, MembershipRow.user_id == _user_id(s, user)
        )
    )
    if done.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound(f"user {user!r} is not a member of {_what(project)}")


def membership_role(s: Session, user_id: int, project_id: int) -> Role | None:
    role = s.scalar(
        sa.select(MembershipRow.role).where(
            MembershipRow.user_id == user_id, MembershipRow.project_id == project_id
        )
    )
    return role  # type: ignore[return-value]


def user_projects(s: Session, user_id: int) -> dict[str, Role]:
    q = (
        sa.select(ProjectRow.name, MembershipRow.role)
        .join(MembershipRow, MembershipRow.project_id == ProjectRow.id)
        .where(MembershipRow.user_id == user_id)
        .order_by(ProjectRow.name)
    )
    return {name: role for name, role in s.execute(q)}  # type: ignore[misc]
