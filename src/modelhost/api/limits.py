"""Refuse a request whose declared body is over its limit before reading a byte of it,
with the plane's own error shape. (FastAPI's max_body_size stays as the backstop for
bodies sent without a Content-Length.)"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from modelhost.api.errors import error_response
from modelhost.errors import PayloadTooLarge


def is_upload(path: str) -> bool:
    """Dataset uploads and model imports take the larger upload limit."""
    return path == "/api/v1/datasets" or (path.startswith("/api/v1/models/") and path.endswith("/import"))


class BodySizeMiddleware:
    def __init__(self, app: ASGIApp, max_request_bytes: int, max_upload_bytes: int) -> None:
        self.app, self.max_request, self.max_upload = app, max_request_bytes, max_upload_bytes

    def limit_for(self, path: str) -> int:
        return self.max_upload if is_upload(path) else self.max_request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length", b"")
            limit = self.limit_for(scope["path"])
            if declared.isdigit() and int(declared) > limit:
                err = PayloadTooLarge(f"request body of {int(declared)} bytes exceeds the {limit} byte limit")
                await error_response(scope["path"], err)(scope, receive, send)
                return
        await self.app(scope, receive, send)
