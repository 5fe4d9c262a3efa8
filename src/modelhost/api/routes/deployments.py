from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Response

from modelhost.api.auth import changes_require_role
from modelhost.api.deps import Manager
from modelhost.serving.manager import DeploymentManager, DeploymentStatus
from modelhost.serving.service import DeploySpec

router = APIRouter(
    prefix="/api/v1/deployments", tags=["deployments"], dependencies=[changes_require_role("admin", "member")]
)


class CreateDeployment(DeploySpec):
    name: str


async def _deploy(
    manager: DeploymentManager, name: str, spec: DeploySpec, replace: bool, response: Response
) -> DeploymentStatus:
    entry, created = await anyio.to_thread.run_sync(manager.deploy, name, spec, replace)
    response.status_code = 201 if created else 200
    return manager.describe(entry.deployment)


@router.get("")
def list_deployments(manager: Manager) -> list[DeploymentStatus]:
    return manager.describe_all()


@router.post("", status_code=201)
async def create_deployment(body: CreateDeployment, manager: Manager, response: Response) -> DeploymentStatus:
    spec = DeploySpec.model_validate(body.model_dump(exclude={"name"}))
    return await _deploy(manager, body.name, spec, False, response)


@router.put("/{name}", status_code=200, responses={201: {"description": "Created"}})
async def put_deployment(
    name: str, body: DeploySpec, manager: Manager, response: Response
) -> DeploymentStatus:
    """Create (201) or update (200): point ``name`` at a version, swapping without dropping requests."""
    return await _deploy(manager, name, body, True, response)


@router.get("/{name}")
def show_deployment(name: str, manager: Manager) -> DeploymentStatus:
    return manager.describe_one(name)


@router.post("/{name}/rollback")
async def rollback_deployment(name: str, manager: Manager) -> DeploymentStatus:
    """Back to the state before the last change, at once (the old runtimes are kept warm)."""
    entry = await anyio.to_thread.run_sync(manager.rollback, name)
    return manager.describe(entry.deployment)


@router.delete("/{name}", status_code=204)
def delete_deployment(name: str, manager: Manager) -> Response:
    manager.undeploy(name)
    return Response(status_code=204)
