from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Request, Response

from modelhost.api.auth import Caller, changes_require_role
from modelhost.api.deps import Manager, ProjectParam
from modelhost.auth.authz import Principal
from modelhost.serving.manager import DeploymentManager, DeploymentStatus
from modelhost.serving.service import DeploySpec

router = APIRouter(
    prefix="/api/v1/deployments", tags=["deployments"], dependencies=[changes_require_role("admin", "member")]
)


class CreateDeployment(DeploySpec):
    name: str


async def _deploy(
    manager: DeploymentManager,
    name: str,
    spec: DeploySpec,
    replace: bool,
    response: Response,
    caller: Principal,
    project: str | None,
) -> DeploymentStatus:
    entry, created = await anyio.to_thread.run_sync(manager.deploy, name, spec, replace, caller, project)
    response.status_code = 201 if created else 200
    return manager.describe(entry.deployment)


@router.get("")
def list_deployments(manager: Manager, caller: Caller) -> list[DeploymentStatus]:
    return manager.describe_all(caller)


@router.post("", status_code=201)
async def create_deployment(
    body: CreateDeployment, manager: Manager, response: Response, caller: Caller, project: ProjectParam = None
) -> DeploymentStatus:
    """Deploy a model, in the model's project."""
    spec = DeploySpec.model_validate(body.model_dump(exclude={"name"}))
    return await _deploy(manager, body.name, spec, False, response, caller, project)


@router.put("/{name}", status_code=200, responses={201: {"description": "Created"}})
async def put_deployment(
    name: str,
    body: DeploySpec,
    manager: Manager,
    response: Response,
    caller: Caller,
    project: ProjectParam = None,
) -> DeploymentStatus:
    """Create (201) or update (200): point ``name`` at a version, swapping without dropping requests."""
    return await _deploy(manager, name, body, True, response, caller, project)


@router.get("/{name}")
def show_deployment(name: str, manager: Manager, caller: Caller) -> DeploymentStatus:
    return manager.describe_one(name, caller)


@router.post("/{name}/rollback")
async def rollback_deployment(name: str, manager: Manager, caller: Caller) -> DeploymentStatus:
    """Back to the state before the last change, at once (the old runtimes are kept warm)."""
    entry = await anyio.to_thread.run_sync(manager.rollback, name, caller)
    return manager.describe(entry.deployment)


@router.delete("/{name}", status_code=204)
def delete_deployment(name: str, manager: Manager, caller: Caller, request: Request) -> Response:
    """Project admins only; the deployment's inference-only keys go with it."""
    manager.undeploy(name, caller)
    request.app.state.authenticator.forget()  # its keys' cached answers too
    return Response(status_code=204)
