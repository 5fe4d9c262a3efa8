"""OpenAI's completions and chat completions over an LLM runtime: whole responses, or SSE
chunks as the engine makes them (``data: {...}`` lines, ``data: [DONE]`` last; an error
midway is sent as a ``data: {"error": ...}`` event, since the status line has gone)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from modelhost.errors import PlatformError
from modelhost.serving.llm.engine import Output
from modelhost.serving.llm.protocol import ChatCompletionRequest, CompletionRequest
from modelhost.serving.llm.runtime import LLMRuntime


class Quota(Protocol):
    """The token quota of the key behind a request (``auth/limits.py``'s TokenQuota)."""

    async def admit(self, prompt_tokens: int) -> None: ...
    def charge(self, completion_tokens: int) -> None: ...
    def refund(self) -> None: ...


@dataclass
class Job:
    """One request, as the engine sees it: prompts (token ids), sampling, and how to answer."""

    kind: str  # "text_completion" | "chat.completion"
    model: str
    prompts: list[list[int]]
    request: CompletionRequest | ChatCompletionRequest
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))
    quota: Quota | None = None
    """Charged for the tokens the job uses, once it has run (set by :func:`admit`)."""

    @property
    def chat(self) -> bool:
        return self.kind == "chat.completion"

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)


async def admit(job: Job, quota: Quota) -> None:
    """Before the job is queued: its key's token quota takes the prompt, or refuses the job
    (RateLimited, 429) when a quota is used up."""
    await quota.admit(job.prompt_tokens)
    job.quota = quota


@contextlib.contextmanager
def _metered(job: Job, completion_tokens: dict[int, int]) -> Iterator[None]:
    """Charges the job's quota for what it used however the job ends (finished, failed, or
    cancelled by a client that went away); a job refused before it generated anything (a
    prompt too long, say) gets its prompt's tokens back instead."""
    refused = False
    try:
        yield
    except PlatformError:
        refused = not completion_tokens
        raise
    finally:
        if job.quota is not None:
            if refused:
                job.quota.refund()
            else:
                job.quota.charge(sum(completion_tokens.values()))


def completion_job(runtime: LLMRuntime, req: CompletionRequest) -> Job:
    prompts = [runtime.encode(p) if isinstance(p, str) else list(p) for p in req.prompts]
    return Job("text_completion", req.model, prompts, req)


def chat_job(runtime: LLMRuntime, req: ChatCompletionRequest) -> Job:
    messages = [{"role": m.role, "content": m.text()} for m in req.messages]
    return Job("chat.completion", req.model, [runtime.encode(runtime.chat_prompt(messages))], req)


def _params(job: Job, runtime: LLMRuntime) -> Any:
    req = job.request
    if isinstance(req, ChatCompletionRequest):
        budget = req.token_budget or runtime.context_length - max(len(p) for p in job.prompts)
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
        return req.sampling(max(1, budget), logprobs)
    return req.sampling(req.max_tokens, req.logprobs)


async def _outputs(runtime: LLMRuntime, job: Job) -> AsyncIterator[tuple[int, Output]]:
    """(choice index, output) across the job's prompts, each prompt with ``n`` choices."""
    params = _params(job, runtime)
    n = job.request.n
    # one prompt at a time keeps this simple; the engine batches across requests anyway
    for p, prompt in enumerate(job.prompts):
        async for out in runtime.generate(prompt, params, n):
            yield p * n + out.index, out


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _logprobs_entry(runtime: LLMRuntime, out: Output, chat: bool) -> dict[str, Any] | None:
    if out.logprob is None or out.token_id is None:
        return None
    token = runtime.tokenizer.decode([out.token_id], skip_special_tokens=False)
    top = [
        {"token": runtime.tokenizer.decode([t], skip_special_tokens=False), "logprob": lp}
        for t, lp in (out.top_logprobs or [])
    ]
    if chat:
        return {"token": token, "logprob": out.logprob, "bytes": list(token.encode()), "top_logprobs": top}
    return {"token": token, "logprob": out.logprob, "top": {t["token"]: t["logprob"] for t in top}}


def _wants_logprobs(job: Job) -> bool:
    req = job.request
    return bool(req.logprobs) if isinstance(req, ChatCompletionRequest) else req.logprobs is not None


async def complete(runtime: LLMRuntime, job: Job) -> dict[str, Any]:
    """The whole response, once every choice has finished."""
    texts: dict[int, list[str]] = {}
    finish: dict[int, str] = {}
    logprobs: dict[int, list[dict[str, Any]]] = {}
    completion_tokens: dict[int, int] = {}
    with _metered(job, completion_tokens):
        async for index, out in _outputs(runtime, job):
            texts.setdefault(index, []).append(out.text)
            completion_tokens[index] = out.completion_tokens
            entry = _logprobs_entry(runtime, out, job.chat) if _wants_logprobs(job) else None
            if entry is not None:
                logprobs.setdefault(index, []).append(entry)
            if out.finish_reason is not None:
                finish[index] = out.finish_reason
    choices = [
        _choice(job, i, "".join(texts.get(i, [])), finish.get(i), logprobs.get(i)) for i in sorted(texts)
    ]
    return {
        "id": f"{'chatcmpl' if job.chat else 'cmpl'}-{job.id}",
        "object": job.kind,
        "created": job.created,
        "model": job.model,
        "choices": choices,
        "usage": _usage(job.prompt_tokens, sum(completion_tokens.values())),
        "system_fingerprint": None,
    }


def _choice(
    job: Job, index: int, text: str, finish: str | None, logprobs: list[dict[str, Any]] | None
) -> dict[str, Any]:
    reason = "length" if finish == "abort" else finish
    if job.chat:
        lp = {"content": logprobs} if logprobs is not None else None
        message = {"role": "assistant", "content": text, "refusal": None}
        return {"index": index, "message": message, "finish_reason": reason, "logprobs": lp}
    lp2 = None
    if logprobs is not None:
        lp2 = {
            "tokens": [e["token"] for e in logprobs],
            "token_logprobs": [e["logprob"] for e in logprobs],
            "top_logprobs": [e["top"] for e in logprobs],
            "text_offset": [],
        }
    return {"index": index, "text": text, "finish_reason": reason, "logprobs": lp2}


def _sse(payload: dict[str, Any] | str) -> bytes:
    body = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
    return f"data: {body}\n\n".encode()


def _stream_choice(runtime: LLMRuntime, job: Job, index: int, out: Output) -> dict[str, Any]:
    entry = _logprobs_entry(runtime, out, job.chat) if _wants_logprobs(job) else None
    reason = (
        None
        if out.finish_reason is None
        else ("length" if out.finish_reason == "abort" else out.finish_reason)
    )
    if job.chat:
        return {
            "index": index,
            "delta": {"content": out.text} if out.text else {},
            "logprobs": {"content": [entry]} if entry else None,
            "finish_reason": reason,
        }
    lp = None
    if entry:
        lp = {
            "tokens": [entry["token"]],
            "token_logprobs": [entry["logprob"]],
            "top_logprobs": [entry["top"]],
            "text_offset": [],
        }
    return {"index": index, "text": out.text, "logprobs": lp, "finish_reason": reason}


async def stream(runtime: LLMRuntime, job: Job, error_body: Any) -> AsyncIterator[bytes]:
    """SSE chunks; ``error_body(exc)`` shapes an error raised after the stream began."""
    kind = "chat.completion.chunk" if job.chat else "text_completion"
    base = {
        "id": f"{'chatcmpl' if job.chat else 'cmpl'}-{job.id}",
        "object": kind,
        "created": job.created,
        "model": job.model,
    }
    req = job.request
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    completion_tokens: dict[int, int] = {}
    try:
        if job.chat:
            for i in range(len(job.prompts) * req.n):
                delta = {"role": "assistant", "content": ""}
                yield _sse(
                    {
                        **base,
                        "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}],
                    }
                )
        with _metered(job, completion_tokens):
            async for index, out in _outputs(runtime, job):
                completion_tokens[index] = out.completion_tokens
                if not out.text and out.finish_reason is None:
                    continue  # a token that completes no character yet: nothing to send
                chunk: dict[str, Any] = {**base, "choices": [_stream_choice(runtime, job, index, out)]}
                if include_usage:
                    chunk["usage"] = None
                yield _sse(chunk)
        if include_usage:
            usage = _usage(job.prompt_tokens, sum(completion_tokens.values()))
            yield _sse({**base, "choices": [], "usage": usage})
    except PlatformError as e:
        yield _sse({"error": error_body(e)})
    except Exception:  # the status line is gone: the client gets an error event, the log the trace
        import logging

        logging.getLogger("modelhost.llm").exception("stream %s failed", job.id)
        yield _sse(
            {"error": error_body(PlatformError("internal error while generating; see the server log"))}
        )
    yield _sse("[DONE]")
