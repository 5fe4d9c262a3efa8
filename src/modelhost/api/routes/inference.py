"""The data plane for predictive models: KServe v1 ``:predict`` and OIP v2 model routes."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter
from fastapi.responses import JSONResponse

import modelhost
from modelhost.api.deps import AppSettings, Manager
from modelhost.api.protocol.oip import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    ResponseOutput,
    ServerMetadata,
)
from modelhost.api.protocol.predict import PredictRequest, PredictResponse
from modelhost.errors import InvalidInput, NotFound
from modelhost.serving.inputs import instances_to_array, tensor_to_array
from modelhost.serving.manager import DeploymentManager

router = APIRouter(tags=["inference"])


@router.post("/v1/models/{name}:predict")
async def predict(
    name: str, body: PredictRequest, manager: Manager, settings: AppSettings
) -> PredictResponse:
    """``{"instances": [[...], ...]}`` -> ``{"predictions": [...]}``, one per instance, in order."""
    dep, rt = manager.runtime(name)
    x = instances_to_array(body.instances, rt.manifest.signature, settings.max_instances)
    dep, out = await manager.predict(name, x)
    primary = out[rt.manifest.signature.outputs[0].name]
    return PredictResponse(predictions=primary.tolist(), model_name=dep.name, model_version=str(dep.version))


@router.get("/v2")
def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="modelhost", version=modelhost.__version__, extensions=[])


def _check_version(manager: DeploymentManager, name: str, version: str | None) -> None:
    dep = manager.get(name).deployment
    if version is not None and version != str(dep.version):
        raise NotFound(f"deployment {name!r} serves version {dep.version}, not {version!r}")


def _metadata(manager: DeploymentManager, name: str, version: str | None) -> ModelMetadata:
    _check_version(manager, name, version)
    dep, rt = manager.runtime(name)
    sig = rt.manifest.signature
    return ModelMetadata(
        name=dep.name,
        versions=[str(dep.version)],
        platform="modelhost_torch",
        inputs=sig.inputs,
        outputs=sig.outputs,
    )


def _ready(manager: DeploymentManager, name: str, version: str | None) -> JSONResponse:
    _check_version(manager, name, version)
    ok = manager.get(name).state == "ready"
    return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 503)


async def _infer(
    manager: DeploymentManager, name: str, version: str | None, body: InferRequest, max_instances: int
) -> InferResponse:
    _check_version(manager, name, version)
    dep, rt = manager.runtime(name)
    sig = rt.manifest.signature
    if len(body.inputs) != len(sig.inputs):
        raise InvalidInput(
            f"expected {len(sig.inputs)} input(s) ({', '.join(t.name for t in sig.inputs)}), "
            f"got {len(body.inputs)}"
        )
    t = body.inputs[0]
    x = tensor_to_array(t.name, t.datatype, t.shape, t.data, sig, max_instances)
    names = [o.name for o in body.outputs] if body.outputs else [o.name for o in sig.outputs]
    known = {o.name: o for o in sig.outputs}
    if unknown := [n for n in names if n not in known]:
        raise InvalidInput(f"unknown output {unknown[0]!r}; the model gives {', '.join(known)}")
    dep, out = await manager.predict(name, x)
    outputs = [
        ResponseOutput(
            name=n,
            shape=list(out[n].shape),
            datatype=known[n].datatype,
            data=np.asarray(out[n]).reshape(-1).tolist(),
        )
        for n in names
    ]
    return InferResponse(model_name=dep.name, model_version=str(dep.version), id=body.id, outputs=outputs)


# Each OIP model route exists with and without /versions/{version}: one handler, two paths.
for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):

    @router.get(prefix, name=f"model_metadata{'_versioned' if 'version}' in prefix else ''}")
    def model_metadata(name: str, manager: Manager, version: str | None = None) -> ModelMetadata:
        return _metadata(manager, name, version)

    @router.get(
        prefix + "/ready",
        response_model=None,
        name=f"model_ready{'_versioned' if 'version}' in prefix else ''}",
    )
    def model_ready(name: str, manager: Manager, version: str | None = None) -> JSONResponse:
        return _ready(manager, name, version)

    @router.post(prefix + "/infer", name=f"model_infer{'_versioned' if 'version}' in prefix else ''}")
    async def model_infer(
        name: str, body: InferRequest, manager: Manager, settings: AppSettings, version: str | None = None
    ) -> InferResponse:
        return await _infer(manager, name, version, body, settings.max_instances)
