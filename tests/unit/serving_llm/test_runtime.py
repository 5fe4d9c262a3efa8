"""The LLM runtime builds the version's architecture (llama family, GPT-2) and its engine
generates what the model alone would, greedy, in every precision it offers."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch
from safetensors.torch import save
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from modelhost.errors import LoadFailed
from modelhost.nn.gpt2 import GPT2Config, GPT2LMHeadModel
from modelhost.nn.llama import LlamaConfig, LlamaForCausalLM
from modelhost.registry.manifest import Manifest, Signature, TensorSpec
from modelhost.serving.llm.runtime import LLMRuntime
from modelhost.serving.llm.sampling import SamplingParams


def tokenizer_json() -> bytes:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tk = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    return tk.to_str().encode()


def version(architecture: str) -> tuple[Manifest, bytes, torch.nn.Module]:
    torch.manual_seed(0)
    if architecture == "llama":
        config = {
            "vocab_size": 256,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
        }
        model: torch.nn.Module = LlamaForCausalLM(LlamaConfig(**config))
    else:
        config = {"vocab_size": 256, "n_positions": 128, "n_embd": 32, "n_layer": 2, "n_head": 2}
        model = GPT2LMHeadModel(GPT2Config(**config))
    signature = Signature(
        inputs=[TensorSpec(name="input_ids", datatype="INT64", shape=[-1, -1])],
        outputs=[TensorSpec(name="logits", datatype="FP32", shape=[-1, -1, 256])],
    )
    manifest = Manifest(
        architecture=architecture,
        config={**config, "eos_token_ids": []},
        task="language_model",
        signature=signature,
    )
    weights = save({k: v.contiguous() for k, v in model.state_dict().items()})
    return manifest, weights, model.eval()


@torch.inference_mode()
def alone(model: torch.nn.Module, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_the_runtime_generates_what_the_model_alone_would(architecture) -> None:
    manifest, weights, model = version(architecture)
    runtime = LLMRuntime(manifest, weights, tokenizer_json())

    async def run() -> list[int]:
        return [
            o.token_id
            async for o in runtime.generate([5, 6, 7], SamplingParams(temperature=0, max_tokens=10))
        ]

    try:
        assert asyncio.run(run()) == alone(model, [5, 6, 7], 10)
    finally:
        runtime.close()
    assert runtime.context_length <= (256 if architecture == "llama" else 127)


def test_the_model_is_built_on_the_thread_that_runs_the_engine(monkeypatch) -> None:
    import modelhost.serving.llm.runtime as module

    manifest, weights, _ = version("llama")
    seen: list[threading.Thread] = []
    original = module.apply_precision

    def spy(*args, **kwargs):
        seen.append(threading.current_thread())
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "apply_precision", spy)
    runtime = LLMRuntime(manifest, weights, tokenizer_json())
    try:
        assert seen == [runtime.engine._thread] and seen[0] is not threading.current_thread()
        assert seen[0].is_alive() and seen[0].name == "llm-engine"
    finally:
        runtime.close()
    assert not seen[0].is_alive()


def test_other_architectures_are_refused_by_name() -> None:
    manifest, weights, _ = version("llama")
    with pytest.raises(LoadFailed, match="serves llama-family, gpt2 and gpt models"):
        LLMRuntime(manifest.model_copy(update={"architecture": "mlp"}), weights, tokenizer_json())


def test_a_gpt_trained_here_is_served_by_the_engine() -> None:
    from modelhost.datasets.sources import TextSource
    from modelhost.registry.manifest import TOKENIZER_FILE, WEIGHTS_FILE
    from modelhost.training.data import prepare
    from modelhost.training.loop import fit
    from modelhost.training.package import package
    from modelhost.training.spec import parse_spec

    spec = parse_spec(
        {
            "dataset": "corpus",
            "task": "language_model",
            "model": {"architecture": "gpt", "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 32},
            "epochs": 2,
            "batch_size": 16,
            "optimizer": {"lr": 0.01},
        }
    )
    data = prepare(TextSource("hello world, hello modelhost. " * 40), spec)
    result = fit(spec, data, lambda *_: False)
    manifest, files = package(spec, data, result, run_id=1, dataset_sha256="0" * 64)
    runtime = LLMRuntime(manifest, files[WEIGHTS_FILE], files[TOKENIZER_FILE])
    prompt = runtime.encode("hello wor")

    async def run() -> tuple[list[int], str]:
        outs = [o async for o in runtime.generate(prompt, SamplingParams(temperature=0, max_tokens=12))]
        return [o.token_id for o in outs], "".join(o.text for o in outs)

    try:
        tokens, text = asyncio.run(run())
    finally:
        runtime.close()
    with torch.inference_mode():
        expected = result.model.eval().generate(torch.tensor([prompt]), 12, temperature=0)[0, len(prompt) :]
    assert tokens == expected.tolist()
    assert text == data.preprocessing.decode(expected.tolist())
