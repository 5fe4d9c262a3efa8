"""The one place where errors become HTTP responses, in each plane's own shape:

- control plane (``/api/...``, everything else): ``{"error": {"type", "message"}}``
- Open Inference Protocol v2 (``/v2/...``) and KServe v1 ``:predict``: ``{"error": "<message>"}``
- OpenAI routes (``/v1/completions``, ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``):
  ``{"error": {"message", "type", "param", "code"}}``
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
    RateLimited,
    Unauthenticated,
    describe_validation_errors,
)

log = logging.getLogger("modelhost.api")


def _protocol_plane(path: str) -> bool:
    return path.startswith("/v2/") or path == "/v2" or path.endswith(":predict")


OPENAI_PATHS = ("/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/models")
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def _openai_plane(path: str) -> bool:
    return path in OPENAI_PATHS or (path.startswith("/v1/models/") and not path.endswith(":predict"))


MAX_WORD, MAX_MESSAGE = 100, 2000
"""Messages quote what clients sent: a word (name, value) longer than MAX_WORD characters is
cut, and a message longer than MAX_MESSAGE, so a huge input never comes back whole."""


def shown(message: str) -> str:
    """``message`` with its overlong words and its overall length capped."""
    if len(message) <= MAX_WORD:
        return message
    words = [
        w if len(w) <= MAX_WORD else f"{w[:MAX_WORD]}...({len(w)} characters)" for w in message.split(" ")
    ]
    text = " ".join(words)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "...(shortened)"


def openai_error_body(exc: PlatformError) -> dict[str, object]:
    """OpenAI's error object; ``param`` is the field a validation message starts with."""
    param = None
    message = shown(exc.message)
    if exc.status == 400 and ": " in message:
        head = message.removeprefix("invalid request: ").split(": ", 1)[0]
        param = head if " " not in head else None
    kind = _OPENAI_TYPES.get(exc.status, "server_error")
    return {"message": message, "type": kind, "param": param, "code": exc.code}


def error_response(path: str, exc: PlatformError) -> JSONResponse:
    body: dict[str, object]
    if _openai_plane(path):
        body = {"error": openai_error_body(exc)}
    elif _protocol_plane(path):
        body = {"error": shown(exc.message)}
    else:
        body = {"error": {"type": exc.code, "message": shown(exc.message)}}
    headers = {}
    if isinstance(exc, Overloaded | RateLimited):
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
