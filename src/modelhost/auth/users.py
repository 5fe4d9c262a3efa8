"""Users: created by platform admins (no self sign-up), signed in with a password, disabled
rather than deleted (their keys stop working, the audit log keeps their name)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelhost.auth.authz import Principal, Role
from modelhost.auth.passwords import DUMMY_HASH, hash_password, verify_password
from modelhost.auth.projects import user_projects
from modelhost.auth.tables import UserRow
from modelhost.db import utcnow
from modelhost.errors import AlreadyExists, Forbidden, NotFound, Unauthenticated
from modelhost.names import check_name


class User(BaseModel):
    id: int
    name: str
    is_admin: bool
    created_at: dt.datetime
    disabled_at: dt.datetime | None
    projects: dict[str, Role]
    """Project name -> the user's role there."""


def _entity(s: Session, row: UserRow) -> User:
    return User(
        id=row.id,
        name=row.name,
        is_admin=row.is_admin,
        created_at=row.created_at,
        disabled_at=row.disabled_at,
        projects=user_projects(s, row.id),
    )


def _require_platform_admin(access: Principal, what: str) -> None:
    if not access.is_admin:
        raise Forbidden(f"{what} needs a platform admin's key")


def create_user(s: Session, access: Principal, name: str, password: str, is_admin: bool = False) -> User:
    _require_platform_admin(access, "creating users")
    check_name("user", name)
    row = UserRow(name=name, password_hash=hash_password(password), is_admin=is_admin)
    try:
        with s.begin_nested():
            s.add(row)
    except IntegrityError as e:
        raise AlreadyExists(f"user {name!r} already exists") from e
    return _entity(s, row)


def list_users(s: Session, access: Principal) -> list[User]:
    _require_platform_admin(access, "listing users")
    return [_entity(s, r) for r in s.scalars(sa.select(UserRow).order_by(UserRow.id))]


def disable_user(s: Session, access: Principal, name: str) -> User:
    """The user can no longer sign in, and every key of theirs stops working."""
    _require_platform_admin(access, "disabling users")
    row = s.scalar(sa.select(UserRow).where(UserRow.name == name))
    if row is None:
        raise NotFound(f"user {name!r} not found")
    if row.id == access.user_id:
        raise Forbidden("you cannot disable yourself")
    row.disabled_at = row.disabled_at or utcnow()
    s.flush()
    return _entity(s, row)


def check_credentials(s: Session, name: str, password: str) -> UserRow:
    """The live user with this name and password, or Unauthenticated (one message for every
    failure; an unknown name costs as much time as a wrong password)."""
    row = s.scalar(sa.select(UserRow).where(UserRow.name == name)) if len(name) <= 64 else None
    ok = verify_password(password, row.password_hash if row is not None else DUMMY_HASH)
    if not ok or row is None or row.disabled_at is not None:
        raise Unauthenticated("wrong user name or password")
    return row
