from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from modelhost.api.auth import Caller, changes_require_role
from modelhost.api.deps import DB, Manager
from modelhost.registry import aliases

router = APIRouter(
    prefix="/api/v1/models/{name}/aliases",
    tags=["models"],
    dependencies=[changes_require_role("admin", "member")],
)


class AliasTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1)


@router.get("")
def list_aliases(name: str, db: DB, caller: Caller) -> dict[str, int]:
    """Alias -> version number."""
    with db.session() as s:
        return aliases.list_aliases(s, name, access=caller)


@router.put("/{alias}")
async def set_alias(
    name: str, alias: str, body: AliasTarget, db: DB, manager: Manager, caller: Caller
) -> dict[str, int]:
    """Point an alias at a version; deployments that follow the alias move with it."""
    with db.session() as s:
        aliases.set_alias(s, name, alias, body.version, access=caller)
    await anyio.to_thread.run_sync(manager.follow_alias, name, alias)
    with db.session() as s:
        return aliases.list_aliases(s, name, access=caller)


@router.delete("/{alias}", status_code=204)
def delete_alias(name: str, alias: str, db: DB, caller: Caller) -> Response:
    with db.session() as s:
        aliases.delete_alias(s, name, alias, access=caller)
    return Response(status_code=204)
