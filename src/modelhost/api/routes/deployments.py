from __future__ import annotations

from typing import Literal

import anyio.to_thread
from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from modelhost.api.deps import DB, Manager
from modelhost.serving import service
from modelhost.serving.manager import DeploymentManager

router = APIRouter(prefix="/api/v1/deployments", tags=["deployments"])


class DeployRequest(BaseModel, extra="forbid"):
    model: str
    version: int | None = Field(None, ge=1)
    """Version number; the model's latest when omitted."""
    runtime: service.RuntimeName = "torch"


class CreateDeployment(DeployRequest):
    name: str


class DeploymentStatus(service.Deployment):
    state: Literal["loading", "ready", "failed", "unknown"]
    error: str | None


def _status(manager: DeploymentManager, dep: service.Deployment) -> DeploymentStatus:
    entry = manager.states().get(dep.name)
    state = entry.state if entry and entry.deployment.version_id == dep.version_id else "unknown"
    return DeploymentStatus(**dep.model_dump(), state=state, error=entry.error if entry else None)


async def _deploy(
    manager: DeploymentManager, name: str, body: DeployRequest, replace: bool
) -> DeploymentStatus:
    entry = await anyio.to_thread.run_sync(
        manager.deploy, name, body.model, body.version, body.runtime, replace
    )
    return _status(manager, entry.deployment)


@router.get("")
def list_deployments(db: DB, manager: Manager) -> list[DeploymentStatus]:
    with db.session() as s:
        return [_status(manager, d) for d in service.list_deployments(s)]


@router.post("", status_code=201)
async def create_deployment(body: CreateDeployment, manager: Manager) -> DeploymentStatus:
    return await _deploy(manager, body.name, body, replace=False)


@router.put("/{name}")
async def put_deployment(name: str, body: DeployRequest, manager: Manager) -> DeploymentStatus:
    """Create or update: point ``name`` at a version, swapping without dropping requests."""
    return await _deploy(manager, name, body, replace=True)


@router.get("/{name}")
def show_deployment(name: str, db: DB, manager: Manager) -> DeploymentStatus:
    with db.session() as s:
        return _status(manager, service.get_deployment(s, name))


@router.delete("/{name}", status_code=204)
def delete_deployment(name: str, manager: Manager) -> Response:
    manager.undeploy(name)
    return Response(status_code=204)
