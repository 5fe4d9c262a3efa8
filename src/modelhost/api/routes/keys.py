from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from pydantic import BaseModel

from modelhost.api.auth import require_role
from modelhost.api.deps import DB, Id
from modelhost.auth import service

router = APIRouter(prefix="/api/v1/keys", tags=["keys"], dependencies=[require_role("admin")])


class CreateKey(BaseModel, extra="forbid"):
    name: str
    role: service.Role = "member"
    expires_at: dt.datetime | None = None


@router.get("")
def list_keys(db: DB) -> list[service.ApiKey]:
    with db.session() as s:
        return service.list_keys(s)


@router.post("", status_code=201)
def create_key(body: CreateKey, db: DB) -> service.CreatedKey:
    """Create a key. The response carries the secret once; only its hash is stored."""
    with db.session() as s:
        return service.create_key(s, body.name, body.role, body.expires_at)


@router.delete("/{key_id}")
def revoke_key(key_id: Id, request: Request) -> service.ApiKey:
    authenticator: service.Authenticator = request.app.state.authenticator
    return authenticator.revoke(key_id)
