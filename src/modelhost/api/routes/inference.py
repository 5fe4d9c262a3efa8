"""The data plane for predictive models: KServe v1 ``:predict`` and OIP v2 model routes.

The two POST operations are served by the ASGI fast path (``api/dataplane.py``) before
FastAPI routing; they are declared here too, calling the same service, so that the
OpenAPI description documents them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse

import modelhost
from modelhost.api.auth import Caller
from modelhost.api.deps import Manager
from modelhost.api.protocol.oip import InferRequest, InferResponse, ModelMetadata, ServerMetadata
from modelhost.api.protocol.predict import PredictRequest, PredictResponse
from modelhost.auth.authz import Principal
from modelhost.serving.inference import InferenceService, serving_for, visible_entry
from modelhost.serving.manager import DeploymentManager

router = APIRouter(tags=["inference"])


def _service(request: Request) -> InferenceService:
    service: InferenceService = request.app.state.inference
    return service


Inference = Annotated[InferenceService, Depends(_service)]


def _body_doc(model: type[Any]) -> dict[str, Any]:
    schema = {"content": {"application/json": {"schema": model.model_json_schema()}}, "required": True}
    return {"requestBody": schema}


@router.post(
    "/v1/models/{name}:predict", response_model=PredictResponse, openapi_extra=_body_doc(PredictRequest)
)
async def predict(name: str, request: Request, service: Inference, caller: Caller) -> Response:
    """``{"instances": [[...], ...]}`` -> ``{"predictions": [...]}``, one per instance, in order."""
    body, headers = await service.predict(name, await request.body(), caller)
    return Response(body, headers=headers)


@router.get("/v2")
def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="modelhost", version=modelhost.__version__, extensions=["binary_tensor_data"])


def _metadata(manager: DeploymentManager, name: str, version: str | None, caller: Principal) -> ModelMetadata:
    entry = serving_for(manager, name, caller)
    arm = entry.pick(version) if version is not None else entry.pick(str(entry.deployment.version))
    return ModelMetadata(
        name=entry.deployment.name,
        versions=[str(a.target.version) for a in entry.arms],
        platform=f"modelhost_{entry.deployment.runtime}",
        inputs=arm.signature.inputs,
        outputs=arm.signature.outputs,
    )


def _ready(manager: DeploymentManager, name: str, version: str | None, caller: Principal) -> JSONResponse:
    entry = visible_entry(manager, name, caller)
    if version is not None and entry.state == "ready":
        entry.pick(version)  # 404 for a version this deployment does not serve
    ok = entry.state == "ready"
    return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 503)


async def _infer(
    service: InferenceService,
    name: str,
    version: str | None,
    request: Request,
    header_length: int | None,
    caller: Principal,
) -> Response:
    body, headers = await service.infer(name, version, await request.body(), header_length, caller)
    return Response(body, headers=headers)


HeaderLength = Annotated[int | None, Header(alias="Inference-Header-Content-Length", ge=0)]

# Each OIP model route exists with and without /versions/{version}: one handler, two paths.
for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
    suffix = "_versioned" if "version}" in prefix else ""

    @router.get(prefix, name=f"model_metadata{suffix}")  # async: serving() may start batchers
    async def model_metadata(
        name: str, manager: Manager, caller: Caller, version: str | None = None
    ) -> ModelMetadata:
        return _metadata(manager, name, version, caller)

    @router.get(prefix + "/ready", response_model=None, name=f"model_ready{suffix}")
    def model_ready(name: str, manager: Manager, caller: Caller, version: str | None = None) -> JSONResponse:
        return _ready(manager, name, version, caller)

    @router.post(
        prefix + "/infer",
        name=f"model_infer{suffix}",
        response_model=InferResponse,
        openapi_extra=_body_doc(InferRequest),
    )
    async def model_infer(
        name: str,
        request: Request,
        service: Inference,
        caller: Caller,
        length: HeaderLength = None,
        version: str | None = None,
    ) -> Response:
        return await _infer(service, name, version, request, length, caller)
