"""The native GPT-2 against transformers' GPT2LMHeadModel on small random models: same checkpoint, same
logits, with and without the KV cache."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config as HFGPT2Config
from transformers import GPT2LMHeadModel as HFGPT2

from modelhost.nn.gpt2 import (
    HEAD_KEY,
    WTE_KEY,
    GPT2Config,
    GPT2LMHeadModel,
    gpt2_from_tensors,
    gpt2_state_dict,
)
from modelhost.nn.gpt2 import kv_cache as gpt2_cache

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = dict(vocab_size=233, n_positions=48, n_embd=64, n_layer=2, n_head=4)


def _pair(**hf: object) -> tuple[HFGPT2, GPT2LMHeadModel]:
    torch.manual_seed(0)
    ref = HFGPT2(HFGPT2Config(**{**SMALL, **hf})).eval()
    return ref, gpt2_from_tensors(GPT2Config.from_hf(ref.config.to_dict()), gpt2_state_dict(ref.state_dict()))


@pytest.mark.parametrize("activation", ["gelu_new", "gelu", "relu"])
def test_logits_and_cached_decoding_match_transformers(activation: str) -> None:
    ref, model = _pair(activation_function=activation, n_inner=96)
    ids = torch.randint(0, 233, (2, 40), generator=torch.Generator().manual_seed(1))
    cache = gpt2_cache(model, n_slots=2, max_len=48)
    with torch.no_grad():
        expected = ref(ids).logits
        torch.testing.assert_close(model(ids), expected, rtol=0, atol=1e-5)
        parts = [model(ids[:, :17], cache)] + [model(ids[:, t : t + 1], cache) for t in range(17, 40)]
    torch.testing.assert_close(torch.cat(parts, dim=1), expected, rtol=0, atol=1e-5)


def test_gpt2model_files_and_their_mask_buffers_load() -> None:
    """Files saved from GPT2Model (the hub's gpt2) lack the ``transformer.`` prefix and carry the causal
    mask as ``h.N.attn.bias``; both are handled, and the head comes from the embeddings."""
    ref, _ = _pair()
    old = {k.removeprefix("transformer."): v for k, v in ref.state_dict().items() if k != HEAD_KEY}
    old["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 48, 48))
    state = gpt2_state_dict(old)
    assert WTE_KEY in state and "transformer.h.0.attn.bias" not in state and HEAD_KEY not in state
    model = gpt2_from_tensors(GPT2Config.from_hf(ref.config.to_dict()), state)
    assert model.lm_head.weight is model.transformer.wte.weight
    ids = torch.randint(0, 233, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), ref(ids).logits, rtol=0, atol=1e-5)


def test_positions_past_the_table_are_refused() -> None:
    _, model = _pair()
    with torch.no_grad(), pytest.raises(ValueError, match="would reach 49 tokens; GPT-2 has 48"):
        model(torch.zeros(1, 49, dtype=torch.int64))


@pytest.mark.parametrize(
    ("hf", "message"),
    [
        ({"activation_function": "silu"}, "activation_function 'silu' is not supported"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx must be false"),
        ({"tie_word_embeddings": False}, "tie_word_embeddings must be true"),
        ({"n_embd": 65}, r"n_embd \(65\) must be divisible by n_head \(4\)"),
    ],
)
def test_configs_it_cannot_compute_are_refused(hf: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GPT2Config.from_hf({**SMALL, "model_type": "gpt2", **hf})
