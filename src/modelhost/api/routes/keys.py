"""API keys: project admins create keys for their project (a role no higher than their own,
or inference-only for one deployment), list and revoke them; platform admins, every key."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request

from modelhost.api.auth import Caller, require_role
from modelhost.api.deps import DB, Id
from modelhost.auth import service

router = APIRouter(prefix="/api/v1/keys", tags=["keys"], dependencies=[require_role("admin")])


class CreateKey(service.KeyLimits, extra="forbid"):
    name: str
    role: service.Role = "member"
    project: str | None = None
    """Default: the caller's project, else "default"; "*" for every project (platform admins)."""
    deployment: str | None = None
    """An inference-only key for this deployment (then ``role`` and ``project`` are ignored)."""
    expires_at: dt.datetime | None = None


@router.get("")
def list_keys(db: DB, caller: Caller) -> list[service.ApiKey]:
    with db.session() as s:
        return service.list_keys(s, caller)


@router.post("", status_code=201)
def create_key(body: CreateKey, db: DB, caller: Caller) -> service.CreatedKey:
    """Create a key. The response carries the secret once; only its hash is stored."""
    limits = service.KeyLimits.model_validate(body.model_dump(include=set(service.KeyLimits.model_fields)))
    with db.session() as s:
        return service.create_key(
            s,
            body.name,
            body.role,
            body.expires_at,
            access=caller,
            project=body.project,
            deployment=body.deployment,
            limits=limits,
        )


@router.delete("/{key_id}")
def revoke_key(key_id: Id, request: Request, caller: Caller) -> service.ApiKey:
    authenticator: service.Authenticator = request.app.state.authenticator
    return authenticator.revoke(key_id, caller)
