"""Inference for predictive models: body bytes in, body bytes out, for both protocols.

One pipeline per request: pick the version (traffic split, or the one the URL names) ->
parse and validate against its signature -> its batcher -> encode. A shadow version gets a
copy of the request after the answer is ready; its answer is compared and logged, never
returned. Both HTTP dispatchers (the ASGI fast path and the FastAPI routes that document
it) call these methods, so there is one implementation of each protocol.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import numpy as np
import orjson

from modelhost.auth.authz import SYSTEM, Principal, may_infer
from modelhost.errors import InvalidInput, NotFound, PlatformError
from modelhost.serving.batcher import Arrays
from modelhost.serving.inputs import instances_to_array
from modelhost.serving.manager import Arm, DeploymentManager, LoadedDeployment

JSON = {"content-type": "application/json"}
shadow_log = logging.getLogger("modelhost.shadow")


def loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidInput(f"malformed JSON: {e}") from e


def to_json_value(a: np.ndarray) -> Any:
    return a if a.dtype.kind in "biuf" else a.tolist()


def visible_entry(manager: DeploymentManager, name: str, principal: Principal) -> LoadedDeployment:
    """The loaded entry of deployment ``name`` (ready or not) if ``principal`` may infer on it;
    else NotFound, as if it did not exist. No I/O: the entry carries its deployment's project."""
    entry = manager.get(name)
    dep = entry.deployment
    if not may_infer(principal, dep.project_id, dep.id):
        raise NotFound(f"deployment {name!r} not found")
    return entry


def serving_for(manager: DeploymentManager, name: str, principal: Principal) -> LoadedDeployment:
    """The ready entry of ``name`` with its batchers started, checked like :func:`visible_entry`
    (call on the event loop)."""
    visible_entry(manager, name, principal)
    return manager.serving(name)


class InferenceService:
    def __init__(self, manager: DeploymentManager, max_instances: int) -> None:
        self.manager, self.max_instances = manager, max_instances
        self.metrics = manager.metrics
        self._shadows: set[asyncio.Task[None]] = set()

    async def predict(
        self, name: str, body: bytes, principal: Principal = SYSTEM
    ) -> tuple[bytes, dict[str, str]]:
        """KServe v1: ``{"instances": [...]}`` -> ``{"predictions": [...]}``, one per instance."""
        start = time.perf_counter()
        entry = serving_for(self.manager, name, principal)
        arm = entry.pick()
        try:
            doc = loads(body)
            if not isinstance(doc, dict) or "instances" not in doc:
                raise InvalidInput('body must be a JSON object with an "instances" list')
            sig = arm.signature
            bools = b"true" in body or b"false" in body
            strings = body.count(b'"') != 2  # two: the key's own quotes
            x = instances_to_array(doc["instances"], sig, self.max_instances, bools, strings)
            inputs = {sig.inputs[0].name: x}
            out = await self._submit(arm, inputs, len(x))
            answer = {
                "predictions": to_json_value(out[sig.outputs[0].name]),
                "model_name": entry.deployment.name,
                "model_version": str(arm.target.version),
            }
            result = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), JSON
        except PlatformError as e:
            self._count(arm, "v1", e.status, start)
            raise
        self._count(arm, "v1", 200, start)
        self._mirror(entry, arm, inputs, len(x), out)
        return result

    async def infer(
        self,
        name: str,
        version: str | None,
        body: bytes,
        header_length: int | None,
        principal: Principal = SYSTEM,
    ) -> tuple[bytes, dict[str, str]]:
        """Open Inference Protocol v2 infer, JSON or with the binary tensor extension."""
        from modelhost.serving import oip

        start = time.perf_counter()
        entry = serving_for(self.manager, name, principal)
        arm = entry.pick(version)
        try:
            sig = arm.signature
            request = oip.parse_infer_request(body, header_length, sig, self.max_instances)
            out = await self._submit(arm, request.inputs, request.rows)
            dep = entry.deployment
            result = oip.encode_infer_response(dep.name, str(arm.target.version), request, out, sig)
        except PlatformError as e:
            self._count(arm, "v2", e.status, start)
            raise
        self._count(arm, "v2", 200, start)
        if version is None:
            self._mirror(entry, arm, request.inputs, request.rows, out)
        return result

    @staticmethod
    async def _submit(arm: Arm, inputs: Arrays, rows: int) -> Arrays:
        assert arm.batcher is not None, "manager.serving() starts every arm's batcher"
        return await arm.batcher.submit(inputs, rows)

    @staticmethod
    def _count(arm: Arm, protocol: str, code: int, start: float) -> None:
        assert arm.metrics is not None, "manager.serving() binds every arm's metrics"
        arm.metrics.request(protocol, code, time.perf_counter() - start)

    def _mirror(self, entry: LoadedDeployment, arm: Arm, inputs: Arrays, rows: int, primary: Arrays) -> None:
        """Send a copy to the shadow version, off the request's path."""
        if entry.shadow is None or entry.shadow.batcher is None:
            return
        task = asyncio.ensure_future(self._shadow(entry, arm, inputs, rows, primary))
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _shadow(
        self, entry: LoadedDeployment, arm: Arm, inputs: Arrays, rows: int, primary: Arrays
    ) -> None:
        shadow = entry.shadow
        assert shadow is not None and shadow.batcher is not None
        name = entry.deployment.name
        try:
            out = await shadow.batcher.submit(inputs, rows)
        except PlatformError as e:  # a full shadow queue or a failing candidate never hurts the primary
            self.metrics.shadow.labels(name, str(shadow.target.version), "error").inc()
            shadow_log.warning(
                json.dumps({"deployment": name, "shadow": shadow.target.version, "error": e.message})
            )
            return
        key = arm.signature.outputs[0].name
        same = key in out and np.array_equal(out[key], primary[key])
        self.metrics.shadow.labels(name, str(shadow.target.version), "match" if same else "differ").inc()
        shadow_log.info(
            json.dumps(
                {
                    "deployment": name,
                    "primary": arm.target.version,
                    "shadow": shadow.target.version,
                    "match": bool(same),
                    "primary_output": to_list(primary.get(key)),
                    "shadow_output": to_list(out.get(key)),
                }
            )
        )


def to_list(a: np.ndarray | None, limit: int = 16) -> Any:
    return None if a is None else a[:limit].tolist()
