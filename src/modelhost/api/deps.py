"""Dependencies routes share: the services this app was built with (set by create_app)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request

from modelhost.artifacts import ArtifactStore
from modelhost.config import Settings
from modelhost.db import Database
from modelhost.serving.manager import DeploymentManager
from modelhost.training.executor import LocalExecutor


def _app_state(attr: str) -> Callable[[Request], Any]:
    def get(request: Request) -> Any:
        return getattr(request.app.state, attr)

    get.__name__ = f"app_state_{attr}"
    return get


DB = Annotated[Database, Depends(_app_state("db"))]
Store = Annotated[ArtifactStore, Depends(_app_state("store"))]
Manager = Annotated[DeploymentManager, Depends(_app_state("manager"))]
Executor = Annotated[LocalExecutor, Depends(_app_state("executor"))]
AppSettings = Annotated[Settings, Depends(_app_state("settings"))]

Id = Annotated[int, Path(ge=1, le=2**31 - 1, description="A numeric id.")]
"""Path ids are bounded, so a huge number is a 400 naming the field, not a database error."""

ProjectParam = Annotated[
    str | None,
    Query(
        alias="project",
        description="The project to create in; default: that of what it derives from (a run's "
        "dataset, a deployment's model), else the key's project, else 'default'.",
    ),
]
