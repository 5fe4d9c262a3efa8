"""Dependencies routes share: the services this app was built with (set by create_app)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from modelhost.artifacts import ArtifactStore
from modelhost.config import Settings
from modelhost.db import Database
from modelhost.serving.manager import DeploymentManager
from modelhost.training.executor import LocalExecutor


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.store
    return store


def _manager(request: Request) -> DeploymentManager:
    manager: DeploymentManager = request.app.state.manager
    return manager


def _executor(request: Request) -> LocalExecutor:
    executor: LocalExecutor = request.app.state.executor
    return executor


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


DB = Annotated[Database, Depends(_db)]
Store = Annotated[ArtifactStore, Depends(_store)]
Manager = Annotated[DeploymentManager, Depends(_manager)]
Executor = Annotated[LocalExecutor, Depends(_executor)]
AppSettings = Annotated[Settings, Depends(_settings)]
