"""The inference fast path: a raw ASGI dispatcher in front of the FastAPI app.

``POST /v1/models/{name}:predict`` and ``POST /v2/models/{name}[/versions/{v}]/infer`` are
matched with string operations and handed to :class:`InferenceService` without FastAPI's
routing, dependency injection and pydantic round trip (which cost more than a small model's
forward pass). Everything else falls through to FastAPI, where the same two operations are
also declared, for the OpenAPI description. Auth and body-size checks wrap this app.

A client that disconnects while its request waits has it cancelled, which drops it from
the batch queue before it is computed. Listening for the disconnect takes a task, so a
request starts listening only once it has waited ``DISCONNECT_WATCH_AFTER_S``: most are
answered sooner, and a request dropped from the queue saves nothing once it has run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelhost.api.errors import error_response
from modelhost.errors import InvalidInput, PayloadTooLarge, PlatformError
from modelhost.serving.inference import InferenceService

log = logging.getLogger("modelhost.api")
Handler = Callable[[bytes, int | None], Awaitable[tuple[bytes, dict[str, str]]]]
DISCONNECT_WATCH_AFTER_S = 0.002


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
            return lambda body, _hl: service.predict(name, body)
    elif path.startswith("/v2/models/") and path.endswith("/infer"):
        parts = path[len("/v2/models/") : -len("/infer")].split("/")
        if len(parts) == 1 and parts[0]:
            return lambda body, hl: service.infer(parts[0], None, body, hl)
        if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
            return lambda body, hl: service.infer(parts[0], parts[2], body, hl)
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


class DataPlane:
    def __init__(self, app: ASGIApp, service: InferenceService, max_body_bytes: int) -> None:
        self.app, self.service, self.max_body = app, service, max_body_bytes

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
            body = await read_body(receive, self.max_body)
            payload, headers = await answer(handler(body, header_length(scope)), receive)
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


async def answer(
    work: Awaitable[tuple[bytes, dict[str, str]]], receive: Receive
) -> tuple[bytes, dict[str, str]]:
    """Await ``work`` in this task; raise ClientGone (having cancelled it, which drops a
    queued request) if the client disconnects first. The watch starts after
    ``DISCONNECT_WATCH_AFTER_S``, so quick answers cost no extra task."""
    task = asyncio.current_task()
    assert task is not None, "called from a request's task"
    watch: asyncio.Future[Message] | None = None
    gone = False

    def on_message(done: asyncio.Future[Message]) -> None:
        nonlocal gone
        if not done.cancelled() and done.exception() is None and done.result()["type"] == "http.disconnect":
            gone = True
            task.cancel()

    def start_watch() -> None:
        nonlocal watch
        watch = asyncio.ensure_future(receive())
        watch.add_done_callback(on_message)

    timer = asyncio.get_running_loop().call_later(DISCONNECT_WATCH_AFTER_S, start_watch)
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:  # cancelled from outside (server shutdown): not ours to swallow
            raise
        task.uncancel()
        raise ClientGone from None
    finally:
        timer.cancel()
        if watch is not None:
            watch.remove_done_callback(on_message)
            watch.cancel()
