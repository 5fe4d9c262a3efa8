"""The inference fast path: a raw ASGI dispatcher in front of the FastAPI app.

``POST /v1/models/{name}:predict`` and ``POST /v2/models/{name}[/versions/{v}]/infer`` are
matched with string operations and handed to :class:`InferenceService` without FastAPI's
routing, dependency injection and pydantic round trip (which cost more than a small model's
forward pass). Everything else falls through to FastAPI, where the same two operations are
also declared, for the OpenAPI description. Auth and body-size checks wrap this app.

A client that disconnects while its request waits has it cancelled, which drops it from
the batch queue before it is computed. Listening for the disconnect takes a task, so a
request starts listening only once it has waited ``DISCONNECT_WATCH_AFTER_S``: most are
answered sooner, and what a dropped request saves is a forward pass it has not had yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelhost.api.errors import error_response
from modelhost.auth.authz import Principal
from modelhost.errors import InvalidInput, PayloadTooLarge, PlatformError, Unauthenticated
from modelhost.serving.inference import InferenceService

log = logging.getLogger("modelhost.api")
Handler = Callable[[bytes, int | None, Principal], Awaitable[tuple[bytes, dict[str, str]]]]
DISCONNECT_WATCH_AFTER_S = 0.05


class ClientGone(Exception):
    """The client disconnected before its answer was ready: there is nobody to answer."""


def is_inference(scope: Scope) -> bool:
    """Cheap pre-check: could this request be one the fast path serves?"""
    path: str = scope["path"]
    return scope["method"] == "POST" and (path.endswith(":predict") or path.endswith("/infer"))


def match(path: str, service: InferenceService) -> Handler | None:
    """The service call for an inference path, or None for any other path."""
    if path.startswith("/v1/models/") and path.endswith(":predict"):
        name = path[len("/v1/models/") : -len(":predict")]
        if name and "/" not in name:
            return lambda body, _hl, who: service.predict(name, body, who)
    elif path.startswith("/v2/models/") and path.endswith("/infer"):
        parts = path[len("/v2/models/") : -len("/infer")].split("/")
        if len(parts) == 1 and parts[0]:
            return lambda body, hl, who: service.infer(parts[0], None, body, hl, who)
        if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
            return lambda body, hl, who: service.infer(parts[0], parts[2], body, hl, who)
    return None


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit} byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def header_length(scope: Scope) -> int | None:
    for k, v in scope["headers"]:
        if k == b"inference-header-content-length":
            if not v.isdigit():
                raise InvalidInput("Inference-Header-Content-Length must be a non-negative integer")
            return int(v)
    return None


def caller(scope: Scope) -> Principal:
    """The principal AuthMiddleware put in the scope; fail closed if there is none."""
    principal: Principal | None = scope.get("state", {}).get("principal")
    if principal is None:
        raise Unauthenticated("missing credentials")
    return principal


class DataPlane:
    def __init__(self, app: ASGIApp, service: InferenceService, max_body_bytes: int) -> None:
        self.app, self.service, self.max_body = app, service, max_body_bytes
        self.disconnects = DisconnectWatch()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = (
            match(scope["path"], self.service)
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if handler is None:
            await self.app(scope, receive, send)
            return
        try:
            principal = caller(scope)
            body = await read_body(receive, self.max_body)
            work = handler(body, header_length(scope), principal)
            payload, headers = await self.disconnects.answer(work, receive)
        except ClientGone:
            return
        except PlatformError as e:
            await error_response(scope["path"], e)(scope, receive, send)
            return
        except Exception:  # outside FastAPI's error middleware: answer 500 ourselves
            log.exception("unhandled error on %s", scope["path"])
            await error_response(scope["path"], PlatformError("internal error; see the server log"))(
                scope, receive, send
            )
            return
        raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        raw_headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
        await send({"type": "http.response.body", "body": payload})


@dataclass(eq=False, slots=True)
class _Waiting:
    """A request awaiting its answer, and (once it has waited long enough) its watch."""

    task: asyncio.Task[Any]
    receive: Receive
    due: float  # loop time at which to start listening for the disconnect
    answered: bool = False
    gone: bool = False
    watch: asyncio.Future[Message] | None = None

    def listen(self) -> None:
        self.watch = asyncio.ensure_future(self.receive())
        self.watch.add_done_callback(self._on_message)

    def _on_message(self, done: asyncio.Future[Message]) -> None:
        if self.answered or done.cancelled() or done.exception() is not None:
            return
        if done.result()["type"] == "http.disconnect":
            self.gone = True
            self.task.cancel()

    def stop(self) -> None:
        self.answered = True
        if self.watch is not None:
            self.watch.remove_done_callback(self._on_message)
            self.watch.cancel()


class DisconnectWatch:
    """Cancels a request whose client disconnects once it has waited ``after_s``. Requests
    wait in the order they came and come due in that order, so one timer serves them all."""

    def __init__(self, after_s: float = DISCONNECT_WATCH_AFTER_S) -> None:
        self.after_s = after_s
        self._waiting: deque[_Waiting] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def answer(
        self, work: Awaitable[tuple[bytes, dict[str, str]]], receive: Receive
    ) -> tuple[bytes, dict[str, str]]:
        """Await ``work`` in this task; raise ClientGone (having cancelled it, which drops a
        queued request) if the client disconnects first."""
        task = asyncio.current_task()
        assert task is not None, "called from a request's task"
        loop = task.get_loop()
        if loop is not self._loop:  # a new event loop (tests run several): start afresh
            self._loop, self._waiting, self._timer = loop, deque(), None
        waiting = self._waiting
        while waiting and waiting[0].answered:
            waiting.popleft()
        request = _Waiting(task, receive, loop.time() + self.after_s)
        waiting.append(request)
        if self._timer is None:
            self._timer = loop.call_at(request.due, self._listen_to_due)
        try:
            return await work
        except asyncio.CancelledError:
            if not request.gone:  # cancelled from outside (server shutdown): not ours to swallow
                raise
            task.uncancel()
            raise ClientGone from None
        finally:
            request.stop()

    def _listen_to_due(self) -> None:
        assert self._loop is not None
        self._timer = None
        now, waiting = self._loop.time(), self._waiting
        while waiting and (waiting[0].answered or waiting[0].due <= now):
            request = waiting.popleft()
            if not request.answered:
                request.listen()
        if waiting:
            self._timer = self._loop.call_at(waiting[0].due, self._listen_to_due)
