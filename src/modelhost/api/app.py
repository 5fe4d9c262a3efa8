"""``create_app(settings)``: builds the services once and wires the routes to them."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

import modelhost
from modelhost.api.auth import AuthMiddleware
from modelhost.api.dataplane import DataPlane, is_inference
from modelhost.api.errors import install_error_handlers
from modelhost.api.guards import RequestGuards
from modelhost.api.limits import BodySizeMiddleware
from modelhost.api.ratelimit import RateLimitMiddleware
from modelhost.api.routes import (
    aliases,
    audit,
    datasets,
    deployments,
    health,
    inference,
    keys,
    metrics,
    models,
    openai,
    projects,
    runs,
    sweeps,
    users,
)
from modelhost.artifacts import open_store
from modelhost.audit.middleware import AuditMiddleware
from modelhost.auth.limits import Limiter
from modelhost.auth.service import Authenticator, CreatedKey, ensure_admin_key
from modelhost.config import Settings, load_settings
from modelhost.db import Database
from modelhost.observability.metrics import Metrics
from modelhost.serving.inference import InferenceService
from modelhost.serving.manager import DeploymentManager
from modelhost.training.executor import LocalExecutor
from modelhost.training.queue import QueueOptions

log = logging.getLogger("modelhost.api")


def bootstrap(settings: Settings, db: Database) -> CreatedKey | None:
    """Prepare a home: folders (0700), schema migrations, and the first admin key."""
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    db.migrate()
    with db.session() as s:
        return ensure_admin_key(s, settings.admin_key.get_secret_value() if settings.admin_key else None)


class ModelhostApp(FastAPI):
    """FastAPI, with the inference routes served by a shorter chain: auth -> body size ->
    data plane, skipping FastAPI's own middleware and routing (``api/dataplane.py``).
    Every other request takes the full stack, which has the same auth and limits."""

    fast_path: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_path is not None and scope["type"] == "http" and is_inference(scope):
            await self.fast_path(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _load_then_settle(manager: DeploymentManager) -> None:
    """Load the deployments, then move everything alive so far (modules, models) out of the
    garbage collector's sight: a full collection over that heap stalls requests for 100 ms."""
    manager.load_all()
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None) -> ModelhostApp:
    settings = settings or load_settings()
    db = Database(settings.resolved_database_url)
    store = open_store(settings)
    manager = DeploymentManager(db, store, Metrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manager.attach(asyncio.get_running_loop())
        app.state.first_admin_key = bootstrap(settings, db)
        options = QueueOptions.parse(
            lease_s=settings.run_lease_s,
            heartbeat_s=settings.run_heartbeat_s,
            max_attempts=settings.run_max_attempts,
        )
        app.state.executor = LocalExecutor(settings, db, options)
        app.state.executor.resume()
        app.state.ready = True
        # Deployments load in the background; /v2/health/ready answers 200 once all are done.
        threading.Thread(
            target=_load_then_settle, args=(manager,), name="load-deployments", daemon=True
        ).start()
        yield
        await manager.close()
        db.dispose()

    app = ModelhostApp(
        title="modelhost",
        version=modelhost.__version__,
        lifespan=lifespan,
        strict_content_type=False,  # `curl -d '{...}'` sends a form content type; read JSON anyway
        description="Train, register, deploy and serve models. Every route but /v2/health/* needs "
        "`Authorization: Bearer <api key>`.",
    )
    app.state.settings, app.state.db, app.state.store, app.state.manager = settings, db, store, manager
    app.state.authenticator = Authenticator(db)
    app.state.inference = InferenceService(manager, settings.max_instances)
    app.state.limiter = Limiter(db)  # one per process: both stacks count against the same buckets
    app.state.ready = False
    install_error_handlers(app)
    limits = {"max_request_bytes": settings.max_request_bytes, "max_upload_bytes": settings.max_upload_bytes}
    app.add_middleware(DataPlane, service=app.state.inference, max_body_bytes=settings.max_request_bytes)
    app.add_middleware(BodySizeMiddleware, **limits)
    app.add_middleware(RateLimitMiddleware, limiter=app.state.limiter)  # per-key rates, after auth
    app.add_middleware(AuthMiddleware, authenticator=app.state.authenticator)
    app.add_middleware(AuditMiddleware, db=db)  # outside auth: records its 401s too
    app.add_middleware(RequestGuards, settings=settings)  # outermost: Host, Origin, headers first
    full_stack = functools.partial(FastAPI.__call__, app)  # for paths the pre-check let through
    dataplane = DataPlane(full_stack, app.state.inference, settings.max_request_bytes)
    rated = RateLimitMiddleware(BodySizeMiddleware(dataplane, **limits), app.state.limiter)
    app.fast_path = RequestGuards(AuthMiddleware(rated, app.state.authenticator), settings)
    for r in (datasets, models):  # uploads: the bigger limit (plus multipart framing)
        app.include_router(r.router, max_body_size=settings.max_upload_bytes + 64 * 1024)
    for r in (
        health,
        sweeps,
        runs,
        aliases,
        deployments,
        keys,
        projects,
        users,
        audit,
        inference,
        openai,
        metrics,
    ):  # sweeps first: /runs/compare
        app.include_router(r.router, max_body_size=settings.max_request_bytes)
    return app
