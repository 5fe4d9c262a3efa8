"""Runtimes for language models and encoders: what a deployment with runtime ``llm`` or
``embedding`` holds. They are not batch models — the LLM engine schedules its own sequences,
the embedder batches its texts — so ``predict`` serves only what fits a tensor protocol
(texts to embeddings) and points language models to the OpenAI routes."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from safetensors.torch import load
from tokenizers import Tokenizer
from torch import nn

from modelhost.errors import InvalidInput, LoadFailed
from modelhost.nn import build_model
from modelhost.nn.bert import Bert
from modelhost.nn.gpt import GPT
from modelhost.nn.gpt2 import GPT2Config, GPT2LMHeadModel
from modelhost.nn.gpt2 import kv_cache as gpt2_cache
from modelhost.nn.llama import KVCache, LlamaConfig, LlamaForCausalLM
from modelhost.registry.manifest import Manifest
from modelhost.serving.embeddings import Embedder
from modelhost.serving.llm.chat import render_chat
from modelhost.serving.llm.engine import Engine, EngineConfig, Output
from modelhost.serving.llm.quantize import Precision, apply_precision
from modelhost.serving.llm.sampling import SamplingParams
from modelhost.serving.runtimes.base import Runtime


def _tokenizer(data: bytes) -> Tokenizer:
    tk = Tokenizer.from_str(data.decode())
    tk.encode_special_tokens = True  # "<|im_end|>" typed in a prompt is text, not the control token
    return tk


def _causal_lm(manifest: Manifest) -> tuple[nn.Module, nn.Module, Callable[..., Any], int]:
    """The version's module (empty), the part int8 quantises, its cache factory, its context."""
    if manifest.architecture == "llama":
        known = {f.name for f in dataclasses.fields(LlamaConfig)}
        lc = LlamaConfig(**{k: v for k, v in manifest.config.items() if k in known})
        llama = LlamaForCausalLM(lc)
        return llama, llama.model.layers, KVCache.for_model, lc.max_position_embeddings
    if manifest.architecture == "gpt2":
        known = {f.name for f in dataclasses.fields(GPT2Config)}
        gc = GPT2Config(**{k: v for k, v in manifest.config.items() if k in known})
        gpt2 = GPT2LMHeadModel(gc)
        return gpt2, gpt2.transformer.h, gpt2_cache, gc.n_positions - 1
    if manifest.architecture == "gpt":  # modelhost's own, trained here
        gpt = build_model("gpt", manifest.config)
        assert isinstance(gpt, GPT)
        # it sees the last block_size tokens; a sequence may run longer (the engine's own bound)
        return CachelessLM(gpt), gpt.transformer.h, TokenHistory, 1 << 20
    raise LoadFailed(
        f"runtime 'llm' serves llama-family, gpt2 and gpt models; this version is {manifest.architecture!r}"
    )


class TokenHistory:
    """The "cache" of a model without one: each slot's tokens so far."""

    def __init__(self, model: nn.Module, n_slots: int, max_len: int) -> None:
        self.ids: list[list[int]] = [[] for _ in range(n_slots)]
        self.max_len = max_len

    def reset(self, slots: list[int]) -> None:
        for s in slots:
            self.ids[s] = []


class CachelessLM(nn.Module):
    """modelhost's GPT behind the engine's interface: every step runs each row's whole
    context (at most ``block_size`` tokens, so the cost stays bounded). Correct and simple;
    the llama family has the real KV cache."""

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        self.gpt = gpt

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return self.gpt.load_state_dict(state_dict, strict=strict, assign=assign)  # the version's own names

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: TokenHistory,
        slots: torch.Tensor,
        last_only: bool = True,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        rows = []
        real = lengths.tolist() if lengths is not None else [input_ids.size(1)] * input_ids.size(0)
        for row, slot, n in zip(input_ids.tolist(), slots.tolist(), real, strict=True):
            row = row[:n]
            cache.ids[slot].extend(row)
            context = torch.tensor([cache.ids[slot][-self.gpt.config.block_size :]])
            logits, _ = self.gpt(context)
            rows.append(logits[:, -1:] if last_only else logits[:, -len(row) :])
        return torch.cat(rows)


def build_on_own_thread(build: Callable[[], Engine]) -> Engine:
    """``build()`` the model and its engine on a new thread, which then runs the engine's loop.

    All of the model's torch work thus happens on one thread, and no other thread starts an
    OpenMP team for it. That matters: GNU OpenMP keeps a team per thread that has run a parallel
    op, and once the process has more team threads than cores its idle workers stop spinning
    and sleep, so every parallel op waits for them to wake. On 2 cores SmolLM2's int8 decode step
    took 21 ms on the thread that had loaded it and 37 ms on another thread (more than on one
    thread alone: 32 ms). Raises what ``build`` raised.
    """
    built: concurrent.futures.Future[Engine] = concurrent.futures.Future()

    def main() -> None:
        try:
            engine = build()
            loop = engine.adopt_current_thread()
        except BaseException as e:  # handed to the caller, who reports it
            built.set_exception(e)
            return
        built.set_result(engine)
        loop()

    threading.Thread(target=main, name="llm-engine", daemon=True).start()
    return built.result()


class LLMRuntime(Runtime):
    """A language model behind the continuous-batching engine."""

    name = "llm"
    batched = False

    def __init__(
        self,
        manifest: Manifest,
        weights: bytes,
        tokenizer: bytes,
        config: EngineConfig = EngineConfig(),
        precision: Precision = "fp32",
    ) -> None:
        self.manifest, self.precision = manifest, precision
        self.tokenizer = _tokenizer(tokenizer)
        self.chat_template: str | None = manifest.config.get("chat_template")
        self.eos_ids = list(manifest.config.get("eos_token_ids") or [])

        def build() -> Engine:
            model, layers, make_cache, context = _causal_lm(manifest)
            model.load_state_dict(load(weights), strict=True)
            self.model = model.eval()
            apply_precision(self.model, precision, layers=layers)
            return Engine(
                self.model,
                lambda slots, length: make_cache(self.model, slots, length),  # in the model's dtype
                self.tokenizer,
                self.eos_ids,
                dataclasses.replace(config, max_len=min(config.max_len, context)),
            )

        self.engine = build_on_own_thread(build)

    @property
    def context_length(self) -> int:
        return self.engine.config.max_len

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise InvalidInput("this is a language model: use /v1/completions or /v1/chat/completions")

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text).ids)

    def chat_prompt(self, messages: list[dict[str, Any]]) -> str:
        if not self.chat_template:
            raise InvalidInput("this model has no chat template; use /v1/completions with a prompt")
        special = self.manifest.config
        bos = special.get("bos_token_id")
        eos = self.eos_ids[0] if self.eos_ids else None
        return render_chat(
            self.chat_template,
            messages,
            bos_token=(self.tokenizer.id_to_token(bos) or "") if isinstance(bos, int) else "",
            eos_token=(self.tokenizer.id_to_token(eos) or "") if isinstance(eos, int) else "",
        )

    def generate(self, prompt_ids: list[int], params: SamplingParams, n: int = 1) -> Any:
        """Async iterator of :class:`Output` (see Engine.generate)."""
        return self.engine.generate(prompt_ids, params, n)

    def close(self) -> None:
        self.engine.stop()


class EmbeddingRuntime(Runtime):
    """An encoder: texts in, one vector each out (also through OIP: BYTES in, FP32 out)."""

    name = "embedding"
    batched = True

    def __init__(self, manifest: Manifest, weights: bytes, tokenizer: bytes) -> None:
        if manifest.architecture != "bert":
            raise LoadFailed(
                f"runtime 'embedding' serves encoders; this version is {manifest.architecture!r}"
            )
        self.manifest = manifest
        model = build_model("bert", manifest.config)
        model.load_state_dict(load(weights), strict=True)
        assert isinstance(model, Bert)
        self.embedder = Embedder(model.eval(), Tokenizer.from_str(tokenizer.decode()))
        self._lock = threading.Lock()  # the embedder serves one batch at a time

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        with self._lock:
            out = self.embedder.embed(texts)
        return out.vectors, out.total_tokens

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [
            v.decode() if isinstance(v, bytes) else str(v) for v in next(iter(inputs.values())).reshape(-1)
        ]
        vectors, _ = self.embed(texts)
        return {"embeddings": vectors}


__all__ = ["EmbeddingRuntime", "LLMRuntime", "Output"]
