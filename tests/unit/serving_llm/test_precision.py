"""LLM weights in bf16 and int8 (weight-only): close to fp32, and the engine runs on them.
The measured quality cost on SmolLM2 is in BENCHMARKS.md (bench/llm_precision.py)."""

from __future__ import annotations

import copy

import pytest
import torch

from modelhost.nn.llama import KVCache, LlamaConfig, LlamaForCausalLM
from modelhost.serving.llm.quantize import Bf16Linear, Int8Linear, apply_precision


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


@torch.inference_mode()
def test_int8_linear_is_the_rounded_weight_times_its_scale() -> None:
    torch.manual_seed(1)
    linear = torch.nn.Linear(32, 16)
    q = Int8Linear(linear)
    x = torch.randn(5, 3, 32)
    dequantised = q.weight_int8.float() * q.scale.float()[:, None]
    # computed in bf16 (the kernel's fast path): within bf16's rounding of the exact product
    exact = x @ dequantised.T + linear.bias
    assert q(x).dtype == torch.float32
    assert torch.allclose(q(x), exact, atol=0.03, rtol=0.02)
    # the weights' own error is the int8 rounding plus the bf16 scale's (8 bits of mantissa)
    assert (dequantised - linear.weight).abs().max() <= q.scale.float().max() * (0.5 + 127 / 256)
    assert q.weight_int8.dtype == torch.int8


@torch.inference_mode()
@pytest.mark.parametrize(("precision", "tolerance"), [("bf16", 0.1), ("int8", 0.05)])
def test_logits_stay_close_to_fp32_and_the_cache_works(model, precision, tolerance) -> None:
    ids = torch.tensor([[5, 17, 99, 3, 42, 7]])
    reference = model(ids)[0, -1]
    m = copy.deepcopy(model)
    apply_precision(m, precision, layers=m.model.layers)
    if precision == "int8":
        assert any(isinstance(x, Int8Linear) for x in m.modules())
        assert isinstance(m.lm_head, Bf16Linear)  # the tied head gets its own bf16 copy ...
        assert m.model.embed_tokens.weight.dtype == torch.float32  # ... and the lookup keeps its table
    else:
        assert m.lm_head.weight.dtype == torch.bfloat16
    out = m(ids)[0, -1].float()
    assert (out - reference).abs().max() < tolerance * reference.abs().max()
    cache = KVCache.for_model(m, 1, 16)
    m(ids, cache=cache, last_only=True)
    step = m(torch.tensor([[int(out.argmax())]]), cache=cache, last_only=True)
    assert step.shape == (1, 1, 256) and torch.isfinite(step.float()).all()
