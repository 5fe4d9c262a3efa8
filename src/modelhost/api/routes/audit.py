"""``GET /api/v1/audit``: the audit log, newest first, for admins."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from modelhost.api.auth import current_principal
from modelhost.api.deps import DB
from modelhost.audit import service
from modelhost.audit.writer import AuditWriter
from modelhost.auth.service import Principal
from modelhost.errors import Forbidden

log = logging.getLogger("modelhost.audit")


def platform_admin(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """The log spans every project, so only admin keys that do too may read it: a project's
    admin (``is_admin`` false) may not see other projects' changes."""
    if principal.role != "admin" or not principal.is_admin:
        raise Forbidden(f"the audit log needs a platform admin's key; the key {principal.name!r} is not one")
    return principal


router = APIRouter(prefix="/api/v1/audit", tags=["audit"], dependencies=[Depends(platform_admin)])


@router.get("")
def list_audit(
    request: Request,
    db: DB,
    since: Annotated[
        dt.datetime | None, Query(description="Entries at or after this time (with a zone).")
    ] = None,
    until: Annotated[dt.datetime | None, Query(description="Entries before this time (with a zone).")] = None,
    actor: Annotated[
        str | None, Query(max_length=200, description="A key or user name, or 'name (prefix)'.")
    ] = None,
    action: Annotated[
        str | None, Query(max_length=600, description="A method, a path prefix, or 'METHOD /path/prefix'.")
    ] = None,
    outcome: Annotated[service.Outcome | None, Query(description="ok, denied or failed.")] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_LIMIT)] = 100,
    cursor: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="A previous page's next_cursor.")
    ] = None,
) -> service.AuditPage:
    """Entries matching every filter given. Everything recorded before this request is included."""
    writer: AuditWriter | None = getattr(request.state, "audit", None)
    if writer is not None and not writer.flush():
        log.warning("audit log: entries still queued; this answer may miss the newest")
    with db.session() as s:
        return service.query(s, since, until, actor, action, outcome, limit, cursor)
