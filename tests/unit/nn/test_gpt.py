from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load, load_model, save, save_model

from modelhost.nn.gpt import GPT, GPTConfig
from tests.unit.nn.helpers import overfit

VOCAB = 50


def _gpt(**kw: object) -> GPT:
    config = {"vocab_size": VOCAB, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32, **kw}
    return GPT(GPTConfig(**config)).eval()  # type: ignore[arg-type]


def _ids(batch: int, steps: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, steps))


def test_logits_for_every_position_and_no_loss_without_targets() -> None:
    logits, loss = _gpt()(_ids(3, 7))
    assert logits.shape == (3, 7, VOCAB) and loss is None


def test_loss_at_init_is_about_ln_vocab() -> None:
    model = _gpt(vocab_size=100)
    idx = torch.randint(0, 100, (8, 16))
    _, loss = model(idx, torch.randint(0, 100, (8, 16)))
    assert loss is not None
    assert abs(loss.item() - math.log(100)) < 0.3


def test_targets_of_minus_one_are_ignored() -> None:
    model = _gpt()
    idx, targets = _ids(2, 6), _ids(2, 6)
    targets[:, :3] = -1
    logits, loss = model(idx, targets)
    expected = F.cross_entropy(logits[:, 3:].reshape(-1, VOCAB), targets[:, 3:].reshape(-1))
    assert loss is not None
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("t", [0, 4, 9])
def test_causal_a_token_changes_no_logits_before_it(t: int) -> None:
    model = _gpt()
    idx = _ids(2, 10)
    changed = idx.clone()
    changed[:, t] = (changed[:, t] + 1) % VOCAB
    before, after = model(idx)[0], model(changed)[0]
    torch.testing.assert_close(after[:, :t], before[:, :t], atol=1e-6, rtol=0)
    assert not torch.allclose(after[:, t:], before[:, t:], atol=1e-4)  # it does change its own and later ones


def test_nanogpt_names_tied_head_and_scaled_residual_init() -> None:
    model = _gpt(n_layer=4, n_embd=64)
    assert model.lm_head.weight is model.transformer.wte.weight
    block = {
        k.removeprefix("transformer.h.0.") for k in model.state_dict() if k.startswith("transformer.h.0.")
    }
    assert block == {
        *(f"{m}.{p}" for m in ("ln_1", "ln_2") for p in ("weight", "bias")),
        *(
            f"{m}.{p}"
            for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
            for p in ("weight", "bias")
        ),
    }
    assert model.transformer.h[0].attn.c_attn.weight.shape == (3 * 64, 64)  # q, k, v in one projection
    assert model.transformer.wte.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert model.transformer.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.1)
    scaled = 0.02 / math.sqrt(2 * 4)
    assert model.transformer.h[0].attn.c_proj.weight.std().item() == pytest.approx(scaled, rel=0.1)
    assert model.transformer.h[3].mlp.c_proj.weight.std().item() == pytest.approx(scaled, rel=0.1)


def test_no_bias_config_has_no_biases() -> None:
    model = _gpt(bias=False)
    assert not [k for k in model.state_dict() if k.endswith(".bias")]
    assert model(_ids(1, 3))[0].shape == (1, 3, VOCAB)


def test_too_long_input_and_bad_config_are_refused() -> None:
    with pytest.raises(ValueError, match="sequence length 17 exceeds block_size 16"):
        _gpt()(_ids(1, 17))
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPTConfig(vocab_size=10, n_embd=30, n_head=4)


def test_greedy_generate_is_deterministic_and_crops_to_block_size() -> None:
    model = _gpt()
    idx = _ids(2, 6)
    out = model.generate(
        idx, 20, top_k=1, generator=torch.Generator().manual_seed(1)
    )  # runs past block_size 16
    again = model.generate(idx, 20, top_k=1, generator=torch.Generator().manual_seed(2))
    assert out.shape == (2, 26) and out.dtype == torch.long
    assert torch.equal(out[:, :6], idx)
    assert torch.equal(out, again)
    assert torch.equal(out, model.generate(idx, 20, temperature=0.0))
    # each new token is the argmax of the logits of the last block_size tokens before it
    step = 25
    assert out[0, step].item() == model(out[:1, step - 16 : step])[0][0, -1].argmax().item()


def test_sampling_follows_its_generator() -> None:
    model = _gpt()
    idx = _ids(2, 4)
    first = model.generate(idx, 8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, model.generate(idx, 8, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(first, model.generate(idx, 8, generator=torch.Generator().manual_seed(8)))


def test_round_trips_through_safetensors_save_model(tmp_path: Path) -> None:
    model, idx = _gpt(), _ids(2, 8)
    save_model(model, str(tmp_path / "gpt.safetensors"))
    loaded = _gpt()
    assert not torch.equal(loaded(idx)[0], model(idx)[0])  # fresh weights differ
    load_model(loaded, tmp_path / "gpt.safetensors")
    assert torch.equal(loaded(idx)[0], model(idx)[0])
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


def test_state_dict_names_the_tied_tensor_once_and_saves_plainly() -> None:
    model, idx = _gpt(), _ids(2, 8)
    keys = list(model.state_dict())
    assert "transformer.wte.weight" in keys and "lm_head.weight" not in keys
    assert keys == [name for name, _ in model.named_parameters()]  # no buffers; tied tensor listed once
    loaded = _gpt()
    loaded.load_state_dict(load(save(model.state_dict())), strict=True)
    assert torch.equal(loaded(idx)[0], model(idx)[0])
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


@pytest.mark.parametrize(
    "kept", [("lm_head.weight",), ("transformer.wte.weight",), ("lm_head.weight", "transformer.wte.weight")]
)
@pytest.mark.parametrize("strict", [True, False])
def test_loads_a_state_dict_with_either_or_both_tied_keys(kept: tuple[str, ...], strict: bool) -> None:
    model, idx = _gpt(), _ids(2, 8)
    state = model.state_dict()
    wte = state.pop("transformer.wte.weight")
    state.update({k: wte for k in kept})
    loaded = _gpt()
    result = loaded.load_state_dict(state, strict=strict)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(loaded(idx)[0], model(idx)[0])
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


def test_overfits_a_batch_of_eight() -> None:
    model = _gpt()
    data = _ids(8, 13)
    x, y = data[:, :-1], data[:, 1:]
    before, after = overfit(model, lambda m: m(x, y)[1], steps=40)
    assert after < before / 2
