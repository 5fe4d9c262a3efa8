"""Deny by default: every request but the health probes and signing in must carry a live API key.

A pure ASGI middleware, so a route added anywhere (routers, docs, mounted sub-apps) is
covered without remembering to add a dependency. A deployment-scoped key gets no further
than the data plane (``/v1/``, ``/v2/``), whose handlers check which deployment it names.
What a key may do with each resource is decided in the services (``auth/authz.py``); the
role dependencies here are a cheap first gate.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from modelhost.api.errors import error_response
from modelhost.auth.service import Authenticator, Principal, Role
from modelhost.errors import Forbidden, PlatformError, Unauthenticated

PUBLIC_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/api/v1/login"})
"""Open without a key: the health probes, and signing in (which is throttled, auth/throttle.py)."""
DATA_PLANE = ("/v1/", "/v2/")


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str:
    for k, v in headers:
        if k == b"authorization":
            scheme, _, token = v.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            break
    raise Unauthenticated("missing credentials: send 'Authorization: Bearer <api key>'")


class AuthMiddleware:
    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app, self.authenticator = app, authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            token = bearer_token(scope["headers"])
            principal = self.authenticator.cached(token)
            if principal is None:
                principal = await anyio.to_thread.run_sync(self.authenticator.verify, token)
        except PlatformError as e:
            await error_response(scope["path"], e)(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal  # before any refusal: the audit log names it
        if principal.deployment_id is not None and not scope["path"].startswith(DATA_PLANE):
            denied = Forbidden(f"the key {principal.name!r} may only run inference on its deployment")
            await error_response(scope["path"], denied)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def current_principal(request: Request) -> Principal:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # unreachable behind AuthMiddleware; fail closed if it is ever removed
        raise Unauthenticated("missing credentials")
    return principal


def _check(principal: Principal, roles: tuple[Role, ...]) -> Principal:
    if principal.role not in roles or principal.deployment_id is not None:
        wanted = " or ".join(roles)
        raise Forbidden(f"this needs the {wanted} role; the key {principal.name!r} is {principal.role}")
    return principal


def require_role(*roles: Role) -> Any:
    """A router or route dependency: only keys with one of ``roles`` get through."""

    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        return _check(principal, roles)

    return Depends(check)


def changes_require_role(*roles: Role) -> Any:
    """Reads (GET) are open to every key; anything that changes state needs one of ``roles``.
    Viewers read and infer; members also upload, train and deploy; admins also manage keys."""

    def check(request: Request, principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        return principal if request.method in ("GET", "HEAD") else _check(principal, roles)

    return Depends(check)


def require_platform_admin() -> Any:
    """A router dependency: only keys that span every project (platform admins) get through."""

    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.is_admin:
            raise Forbidden(f"this needs a platform admin's key; the key {principal.name!r} is not one")
        return principal

    return Depends(check)


Caller = Annotated[Principal, Depends(current_principal)]
"""The principal of the request, for routes to hand to the services."""
