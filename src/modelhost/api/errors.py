"""The one place where errors become HTTP responses, in each plane's own shape:

- control plane (``/api/...``, everything else): ``{"error": {"type", "message"}}``
- Open Inference Protocol v2 (``/v2/...``) and KServe v1 ``:predict``: ``{"error": "<message>"}``
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelhost.errors import (
    InvalidInput,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PlatformError,
    Unauthenticated,
    describe_validation_errors,
)

log = logging.getLogger("modelhost.api")


def _protocol_plane(path: str) -> bool:
    return path.startswith("/v2/") or path == "/v2" or path.endswith(":predict")


def error_response(path: str, exc: PlatformError) -> JSONResponse:
    body: dict[str, object]
    if _protocol_plane(path):
        body = {"error": exc.message}
    else:
        body = {"error": {"type": exc.code, "message": exc.message}}
    headers = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=exc.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    async def platform(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PlatformError)
        if exc.status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc.message)
        return error_response(request.url.path, exc)

    async def validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message = "invalid request: " + describe_validation_errors(exc.errors(), skip=("body",))
        return error_response(request.url.path, InvalidInput(message))

    async def http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        err: PlatformError
        if exc.status_code == 404:
            err = NotFound(f"no route {request.method} {request.url.path}")
        elif exc.status_code == 405:
            err = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        elif exc.status_code == 413:
            err = PayloadTooLarge(f"request body too large for {request.url.path}")
        elif 400 <= exc.status_code < 500:
            err = InvalidInput(str(exc.detail))
        else:
            err = PlatformError(str(exc.detail))
        return error_response(request.url.path, err)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request.url.path, PlatformError("internal error; see the server log"))

    app.add_exception_handler(PlatformError, platform)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(Exception, unexpected)
