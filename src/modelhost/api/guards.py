"""Request guards in front of everything (the fast inference path too): allowed Host names
(DNS rebinding), cross-origin state changes, JSON content types, clean request ids, and the
security headers every response carries.

- **Host**: a request must name one of ``Settings.allowed_hosts`` (port ignored); by default
  the loopback names and the bound address. A page on ``evil.example`` whose name was
  rebound to 127.0.0.1 still sends ``Host: evil.example`` and gets a 400. The health probes
  are guarded too, by choice: they answer only for allowed names, like everything else (a
  Kubernetes probe sets its Host with ``httpHeaders``, or the operator allows the pod's
  name). ``*`` allows every name; ``.example.com`` allows the domain and its subdomains.
- **Origin**: every method but GET, HEAD and OPTIONS is refused (403) when it comes from a
  browser page of another origin: an ``Origin`` header that is neither this server (the
  host and port the request was sent to) nor one of ``Settings.allowed_origins``, or, with
  no Origin, ``Sec-Fetch-Site: cross-site``/``same-site``. Requests without either header
  (curl, the SDKs) are not from a browser page and pass.
- **Content type**: a body sent to a JSON route (``/api``, ``/v1``, ``/v2``) with a type
  other than JSON is refused (415) before it is read: ``text/plain`` is what a cross-site
  form or ``fetch`` can send without a CORS preflight. Form-encoded bodies stay accepted
  (``curl -d`` sends them, and a browser form percent-encodes braces and quotes, so it can
  never produce JSON); multipart only on the upload routes, ``application/octet-stream``
  only on OIP ``/infer`` (its binary tensor extension).
- **Request id**: ``X-Request-Id`` is kept when it matches ``[A-Za-z0-9._:-]{1,64}``,
  otherwise replaced by a generated one, so CR/LF or ANSI escapes from a client never reach a
  log or a response header (a bad one is dropped from the request's headers). Downstream code
  reads it from ``scope["state"]["request_id"]``; every answer echoes it.
"""

from __future__ import annotations

import itertools
import os

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelhost.api.errors import error_response
from modelhost.api.limits import is_upload
from modelhost.config import Settings
from modelhost.errors import Forbidden, InvalidInput, PlatformError, UnsupportedMediaType

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
)
_SECURITY_NAMES = frozenset(k for k, _ in SECURITY_HEADERS)
_READ = frozenset({b"host", b"origin", b"sec-fetch-site", b"content-type", b"x-request-id"})
"""The request headers the guards look at."""
JSON_ROUTE_PREFIXES = ("/api/", "/v1/", "/v2/")
JSON_TYPES = frozenset({"application/json", "application/x-www-form-urlencoded"})
_ID_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")
_ID_PREFIX = os.urandom(4).hex()
_ID_SEQUENCE = itertools.count(1)
MAX_ECHO = 100
"""Longest piece of a client's header quoted back in an error message."""


def default_allowed_hosts(bound: str) -> list[str]:
    """The loopback names, and the bound address unless it is a wildcard (0.0.0.0, ::)."""
    hosts = ["localhost", "127.0.0.1", "::1"]
    if bound not in ("0.0.0.0", "::", ""):
        hosts.append(bound)
    return hosts


def host_name(host: str) -> str:
    """The name part of a Host header value: port dropped, brackets kept off IPv6."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def clean_request_id(value: bytes) -> str | None:
    """The id if it is 1-64 characters of ``[A-Za-z0-9._:-]``, else None."""
    if 0 < len(value) <= 64 and all(c in _ID_CHARS for c in value):
        return value.decode("ascii")
    return None


def quoted(value: str) -> str:
    """A client's value made safe to quote in a message: printable, at most MAX_ECHO characters."""
    shown = value[:MAX_ECHO].encode("unicode_escape").decode("ascii")
    return repr(shown) + (f" (first {MAX_ECHO} characters)" if len(value) > MAX_ECHO else "")


class HostPolicy:
    """Which Host names and Origins this server answers; all decided by set lookups."""

    def __init__(self, settings: Settings) -> None:
        names = settings.allowed_hosts
        if names is None:
            names = default_allowed_hosts(settings.host)
        names = [n.strip().lower() for n in names if n.strip()]
        self.any_host = "*" in names
        self.hosts = frozenset(host_name(n) if not n.startswith(".") else n for n in names)
        self.suffixes = tuple(n for n in names if n.startswith("."))
        self.origins = frozenset(o.strip().lower().rstrip("/") for o in settings.allowed_origins)
        self._seen: dict[str, bool] = {}  # Host values answered before: one lookup per request

    def allows_host(self, host: str) -> bool:
        ok = self._seen.get(host)
        if ok is None:
            ok = self._allows_name(host_name(host))
            if len(self._seen) < 1024:  # bounded: a client making up names fills it once
                self._seen[host] = ok
        return ok

    def _allows_name(self, name: str) -> bool:
        if self.any_host or name in self.hosts:
            return True
        return bool(name) and any(name.endswith(s) or name == s[1:] for s in self.suffixes)

    def allows_origin(self, origin: str, host: str) -> bool:
        """Same origin (the Origin's host:port is the Host the request was sent to) or listed."""
        origin = origin.strip().lower()
        _, sep, netloc = origin.partition("://")
        return (sep != "" and netloc == host.strip().lower()) or origin in self.origins


def check_request(policy: HostPolicy, method: str, path: str, fields: dict[bytes, bytes]) -> None:
    """Raise the error this request deserves, if any (Host, then Origin, then content type)."""
    host = fields.get(b"host", b"").decode("latin-1")
    if not host:
        raise InvalidInput("missing Host header")
    if not policy.allows_host(host):
        raise InvalidInput(
            f"Host {quoted(host_name(host))} is not served here; "
            "add it to MODELHOST_ALLOWED_HOSTS if this server should answer to that name"
        )
    if method in SAFE_METHODS:
        return
    origin = fields.get(b"origin")
    if origin is not None:
        text = origin.decode("latin-1")
        if not policy.allows_origin(text, host):
            raise Forbidden(
                f"cross-origin {method} from {quoted(text)} refused; "
                "add the origin to MODELHOST_ALLOWED_ORIGINS to allow it"
            )
    elif fields.get(b"sec-fetch-site") in (b"cross-site", b"same-site"):
        raise Forbidden(f"cross-site {method} refused (Sec-Fetch-Site without Origin)")
    content_type = fields.get(b"content-type")
    if content_type is not None:
        check_content_type(path, content_type)


def check_content_type(path: str, content_type: bytes) -> None:
    if not path.startswith(JSON_ROUTE_PREFIXES):
        return  # web UI pages: their forms carry CSRF tokens instead
    media = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
    if media in JSON_TYPES or media.endswith("+json"):
        return
    if media == "multipart/form-data" and is_upload(path):
        return
    if media == "application/octet-stream" and path.endswith("/infer") and path.startswith("/v2/"):
        return
    expected = "multipart/form-data" if is_upload(path) else "application/json"
    raise UnsupportedMediaType(f"Content-Type {quoted(media)} is not accepted here; send {expected}")


class RequestGuards:
    """Pure ASGI, outermost on both stacks: refuses before anything reads the body."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.policy = HostPolicy(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        fields: dict[bytes, bytes] = {}
        for k, v in scope["headers"]:
            if k in _READ and k not in fields:  # the first of repeated headers, as Starlette reads them
                fields[k] = v
        request_id = self._request_id(scope, fields)
        # a WebSocket handshake is a GET, but what follows changes state: its Origin is checked
        method = scope["method"] if kind == "http" else "WEBSOCKET"
        try:
            check_request(self.policy, method, scope["path"], fields)
        except PlatformError as e:
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": e.message[:120]})
            else:
                await error_response(scope["path"], e)(scope, receive, with_headers(send, request_id))
            return
        await self.app(scope, receive, with_headers(send, request_id))

    @staticmethod
    def _request_id(scope: Scope, fields: dict[bytes, bytes]) -> bytes:
        given = fields.get(b"x-request-id")
        rid = clean_request_id(given) if given is not None else None
        if rid is None:
            rid = f"{_ID_PREFIX}-{next(_ID_SEQUENCE):x}"  # unique per process start, cheap
            if given is not None:  # a bad one: dropped, so nothing downstream reads it raw
                scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"x-request-id"]
        scope.setdefault("state", {})["request_id"] = rid
        return rid.encode()


def with_headers(send: Send, request_id: bytes) -> Send:
    """``send`` that adds the security headers (those the app did not set) and the request id."""

    async def guarded(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            if any(k.lower() in _SECURITY_NAMES for k, _ in headers):  # rare: keep the app's own
                present = {k.lower() for k, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
            else:
                headers.extend(SECURITY_HEADERS)
            headers.append((b"x-request-id", request_id))
            message["headers"] = headers
        await send(message)

    return guarded
