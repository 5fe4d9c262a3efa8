"""API keys: created random, shown once, stored as a sha256, compared in constant time."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import Session

from modelhost.auth.tables import ApiKeyRow
from modelhost.db import Database, utcnow
from modelhost.errors import AlreadyExists, InvalidInput, NotFound, Unauthenticated
from modelhost.names import check_name

Role = Literal["admin", "member", "viewer"]
KEY_PREFIX = "mh_"
PREFIX_LEN = 8
"""Characters of a key kept in the clear, to tell keys apart in listings (not to find them)."""
MIN_KEY_LEN = 32


class ApiKey(BaseModel):
    id: int
    name: str
    prefix: str
    role: Role
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


class CreatedKey(ApiKey):
    key: str
    """The secret itself: returned once, at creation, and never again."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key that authenticated the request."""

    key_id: int
    name: str
    role: Role


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _entity(row: ApiKeyRow) -> ApiKey:
    return ApiKey.model_validate(row, from_attributes=True)


def create_key(
    s: Session, name: str, role: Role = "admin", expires_at: dt.datetime | None = None, key: str | None = None
) -> CreatedKey:
    """Create a key; ``key`` forces its value (the configured admin key), else 256 random bits."""
    check_name("key", name)
    if key is None:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
    elif len(key) < MIN_KEY_LEN or not key.isascii() or not key.isprintable() or " " in key:
        raise InvalidInput(f"an API key must be at least {MIN_KEY_LEN} printable ASCII characters, no spaces")
    if expires_at is not None and expires_at.tzinfo is None:
        raise InvalidInput("expires_at needs a timezone, e.g. 2030-01-01T00:00:00Z")
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput("expires_at must be in the future")
    if s.scalar(sa.select(ApiKeyRow.id).where(ApiKeyRow.key_hash == _hash(key))) is not None:
        raise AlreadyExists("that key is already registered")
    row = ApiKeyRow(name=name, prefix=key[:PREFIX_LEN], key_hash=_hash(key), role=role, expires_at=expires_at)
    s.add(row)
    s.flush()
    return CreatedKey(**_entity(row).model_dump(), key=key)


def list_keys(s: Session) -> list[ApiKey]:
    return [_entity(r) for r in s.scalars(sa.select(ApiKeyRow).order_by(ApiKeyRow.id))]


def revoke_key(s: Session, key_id: int) -> ApiKey:
    row = s.get(ApiKeyRow, key_id)
    if row is None:
        raise NotFound(f"API key {key_id} not found")
    row.revoked_at = row.revoked_at or utcnow()
    s.flush()
    return _entity(row)


def ensure_admin_key(s: Session, configured: str | None) -> CreatedKey | None:
    """On the first start of a home (no keys yet) create the admin key; return it to show once."""
    if s.scalar(sa.select(sa.func.count()).select_from(ApiKeyRow)):
        return None
    return create_key(s, "admin", "admin", key=configured)


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
    row.last_used_at = utcnow()
    return Principal(key_id=row.id, name=row.name, role=row.role)  # type: ignore[arg-type]


class Authenticator:
    """Verifies bearer tokens against the store, caching good answers for ``ttl`` seconds.

    The cache keeps the request path off the database; revocation through this process
    clears it at once, through another process within ``ttl``.
    """

    def __init__(self, db: Database, ttl: float = 5.0) -> None:
        self._db, self._ttl = db, ttl
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def cached(self, token: str) -> Principal | None:
        hit = self._cache.get(_hash(token))
        return hit[0] if hit and hit[1] > time.monotonic() else None

    def verify(self, token: str) -> Principal:
        principal = self.cached(token)
        if principal is None:
            with self._db.session() as s:
                principal = authenticate(s, token)
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[_hash(token)] = (principal, time.monotonic() + self._ttl)
        return principal

    def revoke(self, key_id: int) -> ApiKey:
        """Revoke a key; this process refuses it from the next request on."""
        with self._db.session() as s:
            key = revoke_key(s, key_id)
        with self._lock:
            self._cache.clear()
        return key
