"""OpenAI-compatible routes: the deployment's name is the ``model`` clients send."""

from __future__ import annotations

import time
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from modelhost.api.auth import Caller
from modelhost.api.deps import Manager
from modelhost.api.errors import openai_error_body
from modelhost.api.ratelimit import Quota
from modelhost.auth.authz import Principal, may_infer
from modelhost.errors import InvalidInput, NotFound
from modelhost.serving.inference import serving_for
from modelhost.serving.llm import openai
from modelhost.serving.llm.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from modelhost.serving.llm.runtime import EmbeddingRuntime, LLMRuntime
from modelhost.serving.manager import DeploymentManager

router = APIRouter(prefix="/v1", tags=["openai"])


def _runtime(manager: DeploymentManager, model: str, kind: type[Any], caller: Principal) -> Any:
    try:
        runtime = serving_for(manager, model, caller).pick().runtime
    except NotFound:
        raise NotFound(f"the model {model!r} does not exist (it is the name of a deployment)") from None
    if not isinstance(runtime, kind):
        what = "a language model" if kind is LLMRuntime else "an embedding model"
        raise InvalidInput(f"model {model!r} is not {what} (it is served by runtime {runtime.name!r})")
    return runtime


async def _answer(runtime: LLMRuntime, job: openai.Job, stream: bool, quota: Quota) -> Any:
    await openai.admit(job, quota)  # the key's token quota, before the job is queued
    if stream:
        return StreamingResponse(
            openai.stream(runtime, job, openai_error_body),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await openai.complete(runtime, job)


@router.get("/models")
def list_models(manager: Manager, caller: Caller) -> dict[str, Any]:
    """The deployments that serve language or embedding models, of those the key may use."""
    data = [
        {"id": s.name, "object": "model", "created": int(s.created_at.timestamp()), "owned_by": s.project}
        for s in manager.describe_all()
        if s.runtime in ("llm", "embedding") and may_infer(caller, s.project_id, s.id)
    ]
    return {"object": "list", "data": data}


@router.post("/completions")
async def completions(body: CompletionRequest, manager: Manager, caller: Caller, quota: Quota) -> Any:
    runtime = _runtime(manager, body.model, LLMRuntime, caller)
    return await _answer(runtime, openai.completion_job(runtime, body), body.stream, quota)


@router.post("/chat/completions")
async def chat_completions(
    body: ChatCompletionRequest, manager: Manager, caller: Caller, quota: Quota
) -> Any:
    runtime = _runtime(manager, body.model, LLMRuntime, caller)
    # the model's own chat template renders off the event loop: a slow one (sandboxed, but it
    # may loop for long) holds one worker thread, never every other request
    job = await anyio.to_thread.run_sync(openai.chat_job, runtime, body)
    return await _answer(runtime, job, body.stream, quota)


@router.post("/embeddings")
async def embeddings(
    body: EmbeddingRequest, manager: Manager, request: Request, caller: Caller
) -> dict[str, Any]:
    runtime: EmbeddingRuntime = _runtime(manager, body.model, EmbeddingRuntime, caller)
    import asyncio

    vectors, tokens = await asyncio.to_thread(runtime.embed, body.texts)
    if body.encoding_format == "base64":
        import base64

        data = [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in vectors]
    else:
        data = vectors.tolist()
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "created": int(time.time()),
    }
