from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modelhost.nn.transformer import TransformerClassifier, TransformerClassifierConfig, sinusoidal_positions
from tests.unit.nn.helpers import overfit

POSITIONS = ["learned", "sinusoidal"]
POOLINGS = ["mean", "cls"]


def _config(**kw: object) -> TransformerClassifierConfig:
    base: dict[str, object] = {
        "vocab_size": 20,
        "num_classes": 3,
        "max_len": 16,
        "d_model": 16,
        "n_heads": 2,
        "n_layers": 2,
        "d_ff": 32,
        "dropout": 0.0,
    }
    return TransformerClassifierConfig(**{**base, **kw})  # type: ignore[arg-type]


def _ids(batch: int, steps: int) -> torch.Tensor:
    return torch.randint(1, 20, (batch, steps))  # (B, T), no padding (pad_id 0)


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("pooling", POOLINGS)
def test_output_shapes(positions: str, pooling: str) -> None:
    model = TransformerClassifier(_config(positions=positions, pooling=pooling, dropout=0.1)).eval()
    for steps in (1, 7, 16):
        out = model(_ids(4, steps))
        assert out.shape == (4, 3) and torch.isfinite(out).all()


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("pooling", POOLINGS)
def test_appended_padding_changes_nothing(positions: str, pooling: str) -> None:
    model = TransformerClassifier(_config(positions=positions, pooling=pooling)).eval()
    ids = _ids(3, 6)
    ids[1, 4:] = 0  # one row already padded
    padded = torch.cat([ids, torch.zeros(3, 5, dtype=torch.long)], dim=1)  # (3, 11)
    torch.testing.assert_close(model(padded), model(ids), atol=1e-5, rtol=1e-5)
    # the mask hides only padding: a real token still matters
    changed = ids.clone()
    changed[0, 2] = 1 + changed[0, 2] % 19
    assert not torch.allclose(model(changed)[0], model(ids)[0], atol=1e-4)


def test_a_row_of_padding_only_gives_finite_logits() -> None:
    model = TransformerClassifier(_config()).eval()
    ids = _ids(2, 5)
    ids[1] = 0
    out = model(ids)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], model(ids[:1])[0])  # the other row is unaffected


def test_sinusoidal_table_values_and_it_is_not_saved() -> None:
    table = sinusoidal_positions(10, 8)
    assert table.shape == (10, 8)
    assert torch.equal(table[0], torch.tensor([0.0, 1.0] * 4))
    assert table[3, 0].item() == pytest.approx(math.sin(3))
    assert table[3, 3].item() == pytest.approx(math.cos(3 * 10000 ** (-2 / 8)))
    model = TransformerClassifier(_config(positions="sinusoidal"))
    assert "pos_emb" not in model.state_dict()
    assert "pos_emb" in TransformerClassifier(_config(positions="learned")).state_dict()


def test_too_long_input_and_bad_config_are_refused() -> None:
    with pytest.raises(ValueError, match="sequence length 17 exceeds max_len 16"):
        TransformerClassifier(_config())(_ids(1, 17))
    with pytest.raises(ValueError, match="divisible by n_heads"):
        _config(d_model=15)
    with pytest.raises(ValueError, match="positions must be"):
        _config(positions="rotary")
    with pytest.raises(ValueError, match="pooling must be"):
        _config(pooling="max")


def test_overfits_a_batch_of_eight() -> None:
    model = TransformerClassifier(_config())
    ids, y = _ids(8, 10), torch.randint(0, 3, (8,))
    before, after = overfit(model, lambda m: F.cross_entropy(m(ids), y), steps=30, lr=3e-3)
    assert after < before / 2
