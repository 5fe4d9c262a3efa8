"""Per-key request rates, enforced right after authentication on both stacks (the inference
fast path too), so a key over its rate is refused before its body is read; and the token
quota of the key behind a language-model request, for the OpenAI routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from modelhost.api.errors import error_response
from modelhost.auth.limits import Limiter, TokenQuota
from modelhost.errors import RateLimited


class RateLimitMiddleware:
    """Counts each authenticated request against its key's rate (``auth/limits.py``); the
    unauthenticated health probes carry no key and are not counted."""

    def __init__(self, app: ASGIApp, limiter: Limiter) -> None:
        self.app, self.limiter = app, limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope.get("state", {}).get("principal") if scope["type"] == "http" else None
        if principal is not None:
            try:
                self.limiter.check_request(principal)
            except RateLimited as e:
                await error_response(scope["path"], e)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def token_quota(request: Request) -> TokenQuota:
    """A route dependency: the token quota of the key that sent this request."""
    limiter: Limiter = request.app.state.limiter
    return limiter.quota(request.state.principal)


Quota = Annotated[TokenQuota, Depends(token_quota)]
