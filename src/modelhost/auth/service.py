"""API keys: created random, shown once, stored as a sha256, compared in constant time.

A key acts for a user (None for keys made without one, like the bootstrap admin key), in
one project with a role (or, for platform admins, in every project), or for inference on
one deployment only; with optional expiry and limits (read by the rate limiter).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from modelhost.auth.authz import RANK, SYSTEM, Principal, Role, lower, require
from modelhost.auth.projects import DEFAULT_PROJECT, membership_role, project_row, visible_project
from modelhost.auth.tables import ApiKeyRow, ProjectRow, UserRow
from modelhost.db import Database, utcnow
from modelhost.errors import AlreadyExists, Forbidden, InvalidInput, NotFound, Unauthenticated
from modelhost.names import check_name

__all__ = ["SYSTEM", "ApiKey", "Authenticator", "CreatedKey", "KeyLimits", "Principal", "Role"]

KEY_PREFIX = "mh_"
PREFIX_LEN = 8
"""Characters of a key kept in the clear, to tell keys apart in listings (not to find them)."""
MIN_KEY_LEN = 32
ALL_PROJECTS = "*"
"""The ``project`` of a key that spans every project: platform admins' keys only."""


class KeyLimits(BaseModel, extra="forbid"):
    """Per-key limits, enforced by the rate limiter; None is unlimited."""

    rate_limit_rps: float | None = Field(None, gt=0, le=1e6)
    """Requests per second."""
    tokens_per_min: int | None = Field(None, ge=1, le=2**31 - 1)
    """Language-model tokens (prompt + generated) per minute."""
    tokens_total: int | None = Field(None, ge=1, le=2**31 - 1)
    """Language-model tokens over the key's life."""


class ApiKey(KeyLimits):
    id: int
    name: str
    prefix: str
    role: Role
    project: str | None
    """None for a key that spans every project."""
    deployment: str | None
    """Set for an inference-only key of one deployment."""
    user: str | None
    tokens_used: int
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


class CreatedKey(ApiKey):
    key: str
    """The secret itself: returned once, at creation, and never again."""


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _entity(s: Session, row: ApiKeyRow) -> ApiKey:
    from modelhost.serving.tables import DeploymentRow

    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        role=row.role,
        project=s.get_one(ProjectRow, row.project_id).name if row.project_id else None,
        deployment=s.get_one(DeploymentRow, row.deployment_id).name if row.deployment_id else None,
        user=s.get_one(UserRow, row.user_id).name if row.user_id else None,
        rate_limit_rps=row.rate_limit_rps,
        tokens_per_min=row.tokens_per_min,
        tokens_total=row.tokens_total,
        tokens_used=row.tokens_used or 0,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


def _check_secret(key: str | None) -> str:
    if key is None:
        return KEY_PREFIX + secrets.token_urlsafe(32)
    if len(key) < MIN_KEY_LEN or not key.isascii() or not key.isprintable() or " " in key:
        raise InvalidInput(f"an API key must be at least {MIN_KEY_LEN} printable ASCII characters, no spaces")
    return key


def _check_expiry(expires_at: dt.datetime | None) -> None:
    if expires_at is not None and expires_at.tzinfo is None:
        raise InvalidInput("expires_at needs a timezone, e.g. 2030-01-01T00:00:00Z")
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput("expires_at must be in the future")


def _insert(s: Session, row: ApiKeyRow, key: str) -> CreatedKey:
    if s.scalar(sa.select(ApiKeyRow.id).where(ApiKeyRow.key_hash == _hash(key))) is not None:
        raise AlreadyExists("that key is already registered")
    row.prefix, row.key_hash = key[:PREFIX_LEN], _hash(key)
    s.add(row)
    s.flush()
    return CreatedKey(**_entity(s, row).model_dump(), key=key)


def _scope(
    s: Session, access: Principal, role: Role, project: str | None, deployment: str | None
) -> tuple[int | None, int | None, Role]:
    """(project id, deployment id, role) of a new key, checked against what ``access`` may grant."""
    if deployment is not None:
        from modelhost.serving.tables import DeploymentRow

        dep = s.scalar(sa.select(DeploymentRow).where(DeploymentRow.name == deployment))
        if dep is None or access.role_in(dep.project_id) is None:
            raise NotFound(f"deployment {deployment!r} not found")
        require(access, dep.project_id, "admin", f"deployment {deployment!r}")
        return dep.project_id, dep.id, "viewer"
    if project == ALL_PROJECTS:
        if not access.is_admin:
            raise Forbidden("a key for every project needs a platform admin's key to create")
        if role != "admin":
            raise InvalidInput("role: a key for every project is a platform admin's key; its role is admin")
        return None, None, role
    if project is not None:
        project_id = visible_project(s, access, project).id
    else:
        project_id = access.project_id or project_row(s, DEFAULT_PROJECT).id
    what = f"project {s.get_one(ProjectRow, project_id).name!r}"
    require(access, project_id, "admin", what)
    mine = access.role_in(project_id)
    if mine is None or RANK[role] > RANK[mine]:
        raise Forbidden(f"role: you are {mine} in {what}; a key you create cannot be {role}")
    return project_id, None, role


def create_key(
    s: Session,
    name: str,
    role: Role = "admin",
    expires_at: dt.datetime | None = None,
    key: str | None = None,
    *,
    access: Principal = SYSTEM,
    project: str | None = None,
    deployment: str | None = None,
    limits: KeyLimits | None = None,
) -> CreatedKey:
    """Create a key for ``access``'s user, in ``project`` (default: the caller's, else
    "default"; ``"*"`` for every project) or for inference on ``deployment``, with a role no
    higher than the caller's there. ``key`` forces its value (the configured admin key)."""
    check_name("key", name)
    secret = _check_secret(key)
    _check_expiry(expires_at)
    project_id, deployment_id, role = _scope(s, access, role, project, deployment)
    row = ApiKeyRow(
        name=name,
        role=role,
        expires_at=expires_at,
        user_id=access.user_id,
        project_id=project_id,
        deployment_id=deployment_id,
        **(limits or KeyLimits()).model_dump(),
    )
    return _insert(s, row, secret)


def login_key(s: Session, user: UserRow, project: str | None, hours: float = 12.0) -> CreatedKey:
    """A new key for a signed-in user: in ``project`` with their role there, or (without one)
    every project for a platform admin, else the one project they belong to."""
    if project is None and user.is_admin:
        project_id, role = None, "admin"
    else:
        if project is None:
            from modelhost.auth.projects import user_projects

            mine = user_projects(s, user.id)
            if len(mine) != 1:
                listed = ", ".join(mine) or "none yet: ask an admin to add you to one"
                raise InvalidInput(f"project: name the project to sign in to; yours: {listed}")
            project = next(iter(mine))
        row = project_row(s, project)
        found = "admin" if user.is_admin else membership_role(s, user.id, row.id)
        if found is None:
            raise NotFound(f"project {project!r} not found")
        project_id, role = row.id, found
    expires = utcnow() + dt.timedelta(hours=hours)
    key = ApiKeyRow(name="login", role=role, expires_at=expires, user_id=user.id, project_id=project_id)
    return _insert(s, key, _check_secret(None))


def _administers(access: Principal, row: ApiKeyRow) -> bool:
    return access.is_admin or (row.project_id is not None and access.role_in(row.project_id) == "admin")


def list_keys(s: Session, access: Principal = SYSTEM) -> list[ApiKey]:
    """The keys of the projects ``access`` administers (every key, for platform admins)."""
    rows = s.scalars(sa.select(ApiKeyRow).order_by(ApiKeyRow.id))
    return [_entity(s, r) for r in rows if _administers(access, r)]


def revoke_key(s: Session, key_id: int, access: Principal = SYSTEM) -> ApiKey:
    row = s.get(ApiKeyRow, key_id)
    if row is None or not _administers(access, row):
        raise NotFound(f"API key {key_id} not found")
    row.revoked_at = row.revoked_at or utcnow()
    s.flush()
    return _entity(s, row)


def ensure_admin_key(s: Session, configured: str | None) -> CreatedKey | None:
    """On the first start of a home (no keys yet) create the admin key, for every project;
    return it to show once."""
    if s.scalar(sa.select(sa.func.count()).select_from(ApiKeyRow)):
        return None
    return create_key(s, "admin", "admin", key=configured, project=ALL_PROJECTS)


def _principal(s: Session, row: ApiKeyRow) -> Principal:
    """What a live key may do now: its role, capped by its user's current membership."""
    role: Role | None = row.role  # type: ignore[assignment]
    user = s.get(UserRow, row.user_id) if row.user_id is not None else None
    if user is not None and user.disabled_at is not None:
        role = None
    elif user is not None and not user.is_admin and row.project_id is not None and role is not None:
        member = membership_role(s, user.id, row.project_id)
        role = lower(role, member) if member is not None else None
    everywhere = row.project_id is None and row.deployment_id is None
    if role is None or (everywhere and (role != "admin" or (user is not None and not user.is_admin))):
        raise Unauthenticated("invalid, expired or revoked API key")
    return Principal(
        key_id=row.id,
        name=row.name,
        role=role,
        user_id=row.user_id,
        is_admin=everywhere,
        project_id=row.project_id,
        deployment_id=row.deployment_id,
        rate_limit_rps=row.rate_limit_rps,
        tokens_per_min=row.tokens_per_min,
        tokens_total=row.tokens_total,
    )


def authenticate(s: Session, presented: str) -> Principal:
    """The principal of a live key, or Unauthenticated. Same message for every failure.

    Found by the sha256 of the whole key (an index lookup that reveals nothing of the
    secret), then compared in constant time.
    """
    digest = _hash(presented)
    row = s.scalar(sa.select(ApiKeyRow).where(ApiKeyRow.key_hash == digest))
    ok = hmac.compare_digest(digest, row.key_hash if row is not None else _hash(""))
    if not ok or row is None or row.revoked_at is not None or (row.expires_at and row.expires_at <= utcnow()):
        raise Unauthenticated("invalid, expired or revoked API key")
    principal = _principal(s, row)
    row.last_used_at = utcnow()
    return principal


class Authenticator:
    """Verifies bearer tokens against the store, caching good answers for ``ttl`` seconds.

    The cache keeps the request path off the database; revocation (and any change to users
    or memberships) through this process clears it at once, through another within ``ttl``.
    Expiry is checked on every hit, so a cached key stops at its expiry to the second.
    """

    def __init__(self, db: Database, ttl: float = 5.0) -> None:
        self._db, self._ttl = db, ttl
        self._cache: dict[str, tuple[Principal, float, dt.datetime | None]] = {}
        self._lock = threading.Lock()

    def cached(self, token: str) -> Principal | None:
        hit = self._cache.get(_hash(token))
        if hit is None or hit[1] <= time.monotonic() or (hit[2] is not None and hit[2] <= utcnow()):
            return None
        return hit[0]

    def verify(self, token: str) -> Principal:
        principal = self.cached(token)
        if principal is None:
            with self._db.session() as s:
                principal = authenticate(s, token)
                expires = s.scalar(sa.select(ApiKeyRow.expires_at).where(ApiKeyRow.id == principal.key_id))
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[_hash(token)] = (principal, time.monotonic() + self._ttl, expires)
        return principal

    def forget(self) -> None:
        """Drop every cached answer: the next request of each key is checked afresh."""
        with self._lock:
            self._cache.clear()

    def revoke(self, key_id: int, access: Principal = SYSTEM) -> ApiKey:
        """Revoke a key; this process refuses it from the next request on."""
        with self._db.session() as s:
            key = revoke_key(s, key_id, access)
        self.forget()
        return key
