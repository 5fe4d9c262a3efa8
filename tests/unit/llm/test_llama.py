"""The native Llama-family module against transformers' Llama, Mistral and Qwen2 on small random models:
same weights, same logits; the KV cache gives the logits of the full forward however the tokens arrive."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM as HFLlama
from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from modelhost.nn.llama import (
    EMBED_KEY,
    HEAD_KEY,
    KVCache,
    LlamaConfig,
    LlamaForCausalLM,
    check_tensors,
    llama_from_tensors,
)
from tests.unit.llm import helpers

SMALL = {**helpers.SMALL, "vocab_size": 211}
pytestmark = pytest.mark.usefixtures("one_thread")
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}
CASES = {
    "llama-untied-gqa": (HFLlama, HFLlamaConfig(**SMALL)),
    "llama-tied-mha-bias": (
        HFLlama,
        HFLlamaConfig(
            **{**SMALL, "num_key_value_heads": 4},
            tie_word_embeddings=True,
            attention_bias=True,
            mlp_bias=True,
        ),
    ),
    "llama3-rope": (HFLlama, HFLlamaConfig(**SMALL, rope_scaling=LLAMA3_ROPE, rope_theta=5e5)),
    "linear-rope": (HFLlama, HFLlamaConfig(**SMALL, rope_scaling={"rope_type": "linear", "factor": 4.0})),
    "explicit-head-dim": (HFLlama, HFLlamaConfig(**SMALL, head_dim=32)),
    "qwen2-bias-tied": (Qwen2ForCausalLM, Qwen2Config(**SMALL, tie_word_embeddings=True)),
    "qwen2-yarn": (
        Qwen2ForCausalLM,
        Qwen2Config(
            **{**SMALL, "num_key_value_heads": 1},
            rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
        ),
    ),
    "mistral": (MistralForCausalLM, MistralConfig(**SMALL, sliding_window=96)),
}


def _pair(case: str) -> tuple[torch.nn.Module, LlamaForCausalLM]:
    """The transformers model with random weights, and the native one holding the same tensors."""
    torch.manual_seed(0)
    cls, hf_config = CASES[case]
    ref = cls(hf_config).eval()
    config = LlamaConfig.from_hf(hf_config.to_dict())
    tensors = dict(ref.state_dict())
    if config.tie_word_embeddings:
        del tensors[HEAD_KEY]
    return ref, llama_from_tensors(config, tensors)


@pytest.mark.parametrize("case", CASES)
def test_logits_match_transformers(case: str) -> None:
    ref, model = _pair(case)
    ids = torch.randint(0, 211, (2, 50), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(ids).logits
        got = model(ids)
    assert got.shape == (2, 50, 211)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", ["llama3-rope", "qwen2-bias-tied"])
def test_cache_fed_in_chunks_and_single_tokens_gives_the_full_logits(case: str) -> None:
    ref, model = _pair(case)
    ids = torch.randint(0, 211, (2, 40), generator=torch.Generator().manual_seed(2))
    cache = KVCache.for_model(model, n_slots=2, max_len=64)
    with torch.no_grad():
        expected = ref(ids).logits
        parts = [model(ids[:, :13], cache), model(ids[:, 13:30], cache)]
        parts += [model(ids[:, t : t + 1], cache) for t in range(30, 40)]
    torch.testing.assert_close(torch.cat(parts, dim=1), expected, rtol=0, atol=1e-5)
    assert cache.lengths.tolist() == [40, 40]


def test_rows_at_different_lengths_decode_together_in_any_slots() -> None:
    _, model = _pair("llama-untied-gqa")
    a = torch.randint(0, 211, (1, 21), generator=torch.Generator().manual_seed(3))
    b = torch.randint(0, 211, (1, 9), generator=torch.Generator().manual_seed(4))
    cache = KVCache.for_model(model, n_slots=4, max_len=32)
    with torch.no_grad():
        full_a, full_b = model(a), model(b)
        model(a[:, :20], cache, slots=torch.tensor([3]))  # prefill each on its own
        model(b[:, :8], cache, slots=torch.tensor([1]))
        step = model(torch.cat([b[:, 8:], a[:, 20:]]), cache, slots=torch.tensor([1, 3]))  # one batch
    torch.testing.assert_close(step[0, 0], full_b[0, 8], rtol=0, atol=1e-5)
    torch.testing.assert_close(step[1, 0], full_a[0, 20], rtol=0, atol=1e-5)
    assert cache.lengths.tolist() == [0, 9, 0, 21]
    cache.reset([3])
    assert cache.lengths.tolist() == [0, 9, 0, 0]


def test_last_only_and_a_full_cache() -> None:
    _, model = _pair("llama-untied-gqa")
    ids = torch.randint(0, 211, (1, 10))
    cache = KVCache.for_model(model, n_slots=1, max_len=12)
    with torch.no_grad():
        last = model(ids, cache, last_only=True)
        torch.testing.assert_close(last[:, 0], model(ids)[:, -1], rtol=0, atol=1e-5)
        with pytest.raises(ValueError, match="would reach 13 tokens; the cache holds 12"):
            model(ids[:, :3], cache)
    assert cache.nbytes == 2 * 2 * 1 * 2 * 12 * 16 * 4  # layers, k+v, slots, kv heads, len, head_dim, fp32


def test_tied_weights_are_saved_once_and_restored() -> None:
    model = LlamaForCausalLM(LlamaConfig(**SMALL, tie_word_embeddings=True))
    state = model.state_dict()
    assert EMBED_KEY in state and HEAD_KEY not in state
    fresh = LlamaForCausalLM(LlamaConfig(**SMALL, tie_word_embeddings=True))
    fresh.load_state_dict(state)  # strict: the tied name is filled from the other
    assert fresh.lm_head.weight is fresh.model.embed_tokens.weight
    assert torch.equal(fresh.lm_head.weight, model.model.embed_tokens.weight)


def test_bfloat16_weights_keep_float32_rotary_frequencies() -> None:
    ref, model = _pair("llama-untied-gqa")
    model = model.to(torch.bfloat16)
    assert model.inv_freq.dtype == torch.float32
    ids = torch.randint(0, 211, (1, 20))
    with torch.no_grad():
        got = model(ids).float()
        expected = ref(ids).logits
    assert (got - expected).abs().max() < 0.1  # bf16 weights: close, not equal


def test_wrong_checkpoints_are_named() -> None:
    config = LlamaConfig(**SMALL)
    shapes = {k: tuple(v.shape) for k, v in LlamaForCausalLM(config).state_dict().items()}
    shapes["model.layers.0.mlp.up_proj.weight"] = (96, 65)
    del shapes["model.norm.weight"]
    shapes["model.layers.9.extra"] = (1,)
    with pytest.raises(ValueError, match="weights do not match") as e:
        check_tensors(config, shapes)
    message = str(e.value)
    assert "missing model.norm.weight" in message and "unexpected model.layers.9.extra" in message
    assert "model.layers.0.mlp.up_proj.weight is (96, 65), expected (96, 64)" in message


@pytest.mark.parametrize(
    ("hf", "message"),
    [
        ({**SMALL, "model_type": "llama", "hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
        (
            {**SMALL, "model_type": "llama", "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}},
            "'dynamic'",
        ),
        ({**SMALL, "model_type": "llama", "num_key_value_heads": 3}, "multiple of num_key_value_heads"),
        ({"model_type": "llama", "vocab_size": 10}, "config.json lacks hidden_size"),
    ],
)
def test_configs_it_cannot_compute_are_refused(hf: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LlamaConfig.from_hf(hf)


def test_config_reads_both_rope_spellings_and_the_sliding_window() -> None:
    old = LlamaConfig.from_hf(
        {**SMALL, "model_type": "llama", "rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 2.0}}
    )
    new = LlamaConfig.from_hf(
        {
            **SMALL,
            "model_type": "llama",
            "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5},
        }
    )
    assert old == new and old.rope_theta == 5e5 and old.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    mistral = LlamaConfig.from_hf({**SMALL, "model_type": "mistral", "sliding_window": 96})
    assert mistral.max_position_embeddings == 96
    qwen = LlamaConfig.from_hf(
        {**SMALL, "model_type": "qwen2", "sliding_window": 96, "use_sliding_window": False}
    )
    assert qwen.max_position_embeddings == 128 and qwen.qkv_bias and not qwen.o_bias
