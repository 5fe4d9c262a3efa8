"""Records each state-changing request in the audit log once its answer is known.

State changes are POST, PUT, PATCH and DELETE, except inference (OIP ``…/infer``, KServe
``:predict``, OpenAI completions, chat completions and embeddings), which reads a model.
For each one the log gets who (the principal AuthMiddleware left in the scope, or the name
a login attempt gave), what (method, the route template such as ``/api/v1/datasets/{name}``
or the raw path when nothing matched, and the target: the path parameters, else the
``name`` or ``id`` of the resource a create returned), when, from where (the peer address),
the status, and the outcome (``ok``, ``denied`` for 401/403, ``failed`` for other errors).

Entries go to :class:`~modelhost.audit.writer.AuditWriter`, which writes them off the
request path (fail-open: see its docstring). Placed outside AuthMiddleware, this also sees
the 401s that middleware answers itself; the principal is read after the call, because the
scope's state is shared down the chain.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import anyio.to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelhost.audit.service import METHODS, Entry, outcome_of
from modelhost.audit.writer import AuditWriter
from modelhost.auth.authz import Principal
from modelhost.db import Database, utcnow

LOGIN_PATHS = frozenset({"/api/v1/login"})
"""Public routes where the caller says who they are in the body (a user name)."""
_INFERENCE = re.compile(
    r"^/v1/(completions|chat/completions|embeddings)$|^/v1/models/[^/]+:predict$|^/v2/models/.+/infer$"
)
_CAPTURE_BYTES = 64 * 1024
"""Most bytes of a login body or a JSON answer read for a name; bigger ones are not parsed."""
_NAME_FIELDS = ("username", "user", "name", "email")
CLIENT_DISCONNECTED = 499
"""Status recorded when the client went away before any answer was sent (nginx's code)."""


def is_state_change(scope: Scope) -> bool:
    return scope["method"] in METHODS and not _INFERENCE.match(scope["path"])


def clean(text: str, limit: int) -> str:
    """Printable and bounded: control characters (CR, LF, ANSI escapes) become ``\\xNN``."""
    out = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[: limit * 4])
    return out[:limit]


@dataclass
class _Exchange:
    """What one request showed of itself while it passed through."""

    status: int | None = None
    json_answer: bool = False
    request_body: bytearray = field(default_factory=bytearray)
    answer_body: bytearray = field(default_factory=bytearray)


class AuditMiddleware:
    """Pure ASGI; exposes its writer to routes as ``request.state.audit`` (for ``flush``)."""

    def __init__(self, app: ASGIApp, db: Database, writer: AuditWriter | None = None) -> None:
        self.app = app
        self.writer = writer or AuditWriter(db)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._flushing_on_shutdown(receive), send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["audit"] = self.writer
        if not is_state_change(scope):
            await self.app(scope, receive, send)
            return
        seen = _Exchange()
        login = scope["path"] in LOGIN_PATHS
        try:
            await self.app(scope, _teeing(receive, seen) if login else receive, _watching(send, seen))
        except Exception:
            seen.status = seen.status or 500  # the server error handler answers 500 outside us
            raise
        finally:
            self.writer.submit(_entry(scope, seen, login))

    def _flushing_on_shutdown(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":  # before the app disposes of the database
                await anyio.to_thread.run_sync(self.writer.close)
            return message

        return wrapped


def _teeing(receive: Receive, seen: _Exchange) -> Receive:
    async def wrapped() -> Message:
        message = await receive()
        if message["type"] == "http.request" and len(seen.request_body) < _CAPTURE_BYTES:
            seen.request_body += message.get("body", b"")
        return message

    return wrapped


def _watching(send: Send, seen: _Exchange) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            seen.status = message["status"]
            headers = dict(message.get("headers", []))
            seen.json_answer = headers.get(b"content-type", b"").startswith(b"application/json")
        elif (
            message["type"] == "http.response.body"
            and seen.json_answer
            and len(seen.answer_body) < _CAPTURE_BYTES
        ):
            seen.answer_body += message.get("body", b"")
        await send(message)

    return wrapped


def _entry(scope: Scope, seen: _Exchange, login: bool) -> Entry:
    principal: Principal | None = scope.get("state", {}).get("principal")
    status = seen.status or CLIENT_DISCONNECTED
    route = scope.get("route")
    path = getattr(route, "path", None) or scope["path"]
    client = scope.get("client")
    request_id = scope.get("state", {}).get("request_id")  # set and cleaned by RequestGuards
    return Entry(
        at=utcnow(),
        actor=clean(_actor(principal, seen, login), 200),
        actor_key_id=principal.key_id if principal else None,
        user_id=principal.user_id if principal else None,
        project_id=principal.project_id if principal else None,
        method=scope["method"],
        path=clean(path, 512),
        target=_target(scope, seen, status),
        status=status,
        outcome=outcome_of(status),
        client=clean(str(client[0]) if client else "unknown", 128),
        request_id=request_id,
    )


def _actor(principal: Principal | None, seen: _Exchange, login: bool) -> str:
    if principal is not None:
        return principal.name
    if login:
        return _named_in(bytes(seen.request_body), _login_fields) or "anonymous login"
    return "anonymous"


def _target(scope: Scope, seen: _Exchange, status: int) -> str | None:
    params = scope.get("path_params") or {}
    if len(params) == 1:
        return clean(str(next(iter(params.values()))), 256)
    if params:
        return clean(" ".join(f"{k}={v}" for k, v in params.items()), 256)
    if status < 400 and seen.answer_body:  # a create: the name or id of what it made
        return _named_in(bytes(seen.answer_body), _json_fields)
    return None


def _named_in(body: bytes, parse: Callable[[bytes], dict[str, Any]]) -> str | None:
    """The first name-like field of a small body, cleaned; None if there is none or it is too big."""
    if not body or len(body) >= _CAPTURE_BYTES:
        return None
    try:
        fields = parse(body)
    except (ValueError, UnicodeDecodeError):
        return None
    for name in (*_NAME_FIELDS, "id"):
        value = fields.get(name)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return clean(str(value), 128)
    return None


def _json_fields(body: bytes) -> dict[str, Any]:
    doc = json.loads(body)
    return doc if isinstance(doc, dict) else {}


def _login_fields(body: bytes) -> dict[str, Any]:
    """A login body as JSON or as a form; only name fields are ever read (never the password)."""
    if body.lstrip().startswith(b"{"):
        return {k: v for k, v in _json_fields(body).items() if k in _NAME_FIELDS}
    form = parse_qs(body.decode(), max_num_fields=20)
    return {k: v[0] for k, v in form.items() if k in _NAME_FIELDS}
