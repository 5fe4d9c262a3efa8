"""OpenAI-compatible routes: the deployment's name is the ``model`` clients send."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from modelhost.api.deps import Manager
from modelhost.api.errors import openai_error_body
from modelhost.errors import InvalidInput, NotFound
from modelhost.serving.llm import openai
from modelhost.serving.llm.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from modelhost.serving.llm.runtime import EmbeddingRuntime, LLMRuntime
from modelhost.serving.manager import DeploymentManager

router = APIRouter(prefix="/v1", tags=["openai"])


def _runtime(manager: DeploymentManager, model: str, kind: type[Any]) -> Any:
    try:
        runtime = manager.serving(model).pick().runtime
    except NotFound:
        raise NotFound(f"the model {model!r} does not exist (it is the name of a deployment)") from None
    if not isinstance(runtime, kind):
        what = "a language model" if kind is LLMRuntime else "an embedding model"
        raise InvalidInput(f"model {model!r} is not {what} (it is served by runtime {runtime.name!r})")
    return runtime


def _answer(runtime: LLMRuntime, job: openai.Job, stream: bool) -> Any:
    if stream:
        return StreamingResponse(
            openai.stream(runtime, job, openai_error_body),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return openai.complete(runtime, job)


@router.get("/models")
def list_models(manager: Manager) -> dict[str, Any]:
    """The deployments that serve language or embedding models."""
    data = [
        {"id": s.name, "object": "model", "created": int(s.created_at.timestamp()), "owned_by": "modelhost"}
        for s in manager.describe_all()
        if s.runtime in ("llm", "embedding")
    ]
    return {"object": "list", "data": data}


@router.post("/completions")
async def completions(body: CompletionRequest, manager: Manager) -> Any:
    runtime = _runtime(manager, body.model, LLMRuntime)
    answer = _answer(runtime, openai.completion_job(runtime, body), body.stream)
    return answer if body.stream else await answer


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, manager: Manager) -> Any:
    runtime = _runtime(manager, body.model, LLMRuntime)
    answer = _answer(runtime, openai.chat_job(runtime, body), body.stream)
    return answer if body.stream else await answer


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, manager: Manager, request: Request) -> dict[str, Any]:
    runtime: EmbeddingRuntime = _runtime(manager, body.model, EmbeddingRuntime)
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
