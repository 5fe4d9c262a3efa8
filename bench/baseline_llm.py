"""The LLM baseline: transformers' ``generate`` behind the FastAPI server a user writes by hand.

One ``POST /v1/completions`` in OpenAI's streaming shape (SSE chunks, a usage chunk when
``stream_options.include_usage``, ``data: [DONE]``), so bench/llm_load.py drives it exactly as it
drives modelhost. The model is transformers' own ``LlamaForCausalLM`` in float32 with the tensors
of the GGUF file; ``generate`` runs greedy in a thread and streams through
``TextIteratorStreamer`` (transformers' documented way to stream), one request at a time under
a lock: a user's wrapper does not batch, and two ``generate`` calls at once on two cores only
fight over them. Torch's default thread count (one per core) is left as is.

    python bench/baseline_llm.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf --port 8002
"""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer


class StreamOptions(BaseModel):
    include_usage: bool = False


class Body(BaseModel):
    """The part of OpenAI's completions request this server honours: greedy decoding only."""

    prompt: list[int] = Field(min_length=1)
    """Token ids (the bench sends the same ids to both servers)."""
    max_tokens: int = Field(16, ge=1, le=4096)
    temperature: float = Field(0.0, le=0.0)
    ignore_eos: bool = False
    stream: bool = True
    stream_options: StreamOptions | None = None


def load(gguf: Path) -> tuple[torch.nn.Module, Any, str]:
    """The model (float32, eval) and tokenizer for ``gguf``, and how the model was loaded.

    ``from_pretrained(gguf_file=...)`` wants the ``accelerate`` package for GGUF files; without
    it, the same model is built the way from_pretrained builds it: the config transformers reads
    from the file, then the tensors of its own GGUF loader (tied head re-tied)."""
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
        )
        how = "AutoModelForCausalLM.from_pretrained(gguf_file=...)"
    except ValueError as e:
        if "accelerate" not in str(e):
            raise
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
        missing = set(model.load_state_dict(tensors, strict=False).missing_keys)
        model.tie_weights()
        if missing - {"lm_head.weight"} or (
            missing and model.lm_head.weight is not model.get_input_embeddings().weight
        ):
            raise RuntimeError(f"the GGUF file lacks tensors: {sorted(missing)}") from e
        how = "AutoModelForCausalLM.from_config + transformers' load_gguf_checkpoint (no accelerate)"
    return model.eval(), tokenizer, how


def sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def create_app(model: torch.nn.Module, tokenizer: Any, loaded_by: str = "") -> FastAPI:
    app = FastAPI()
    one_at_a_time = threading.Lock()

    def generate(body: Body, streamer: TextIteratorStreamer, made: list[int]) -> None:
        ids = torch.tensor([body.prompt])
        # ignore_eos: no eos_token_id, so generate neither stops at nor suppresses the EOS token
        eos = {"eos_token_id": None} if body.ignore_eos else {}
        try:
            with one_at_a_time, torch.inference_mode():
                out = model.generate(
                    ids, attention_mask=torch.ones_like(ids), max_new_tokens=body.max_tokens, do_sample=False,
                    pad_token_id=tokenizer.eos_token_id, streamer=streamer, **eos,
                )  # fmt: skip
            made.append(out.shape[1] - ids.shape[1])
        finally:
            streamer.on_finalized_text("", stream_end=True)  # the reader ends, even after an error

    @app.post("/v1/completions")
    def completions(body: Body) -> StreamingResponse:
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        made: list[int] = []
        worker = threading.Thread(target=generate, args=(body, streamer, made), daemon=True)
        worker.start()

        def events() -> Iterator[str]:
            for text in streamer:
                if text:
                    yield sse({"object": "text_completion", "choices": [{"index": 0, "text": text}]})
            worker.join()  # generate ends the stream a moment before it returns the token count
            usage = {"prompt_tokens": len(body.prompt), "completion_tokens": made[0] if made else 0}
            if body.stream_options and body.stream_options.include_usage:
                yield sse({"object": "text_completion", "choices": [], "usage": usage})
            yield sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "torch_threads": torch.get_num_threads(), "loaded_by": loaded_by}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    model, tokenizer, how = load(args.gguf)
    uvicorn.run(create_app(model, tokenizer, how), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
