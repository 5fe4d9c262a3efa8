from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modelhost.nn.rnn import GRU, LSTM, RNNConfig
from tests.unit.nn.helpers import overfit

MODELS = {"lstm": LSTM, "gru": GRU}


def _input(config: RNNConfig, batch: int = 3, steps: int = 5) -> torch.Tensor:
    if config.vocab_size is not None:
        return torch.randint(0, config.vocab_size, (batch, steps))  # (B, T) int64 ids
    assert config.input_size is not None
    return torch.randn(batch, steps, config.input_size)  # (B, T, input_size)


VARIANTS = {
    "float-classify": RNNConfig(input_size=4, hidden_size=8, num_classes=3),
    "float-regress": RNNConfig(input_size=4, hidden_size=8, output_size=2),
    "bidirectional-2-layers": RNNConfig(
        input_size=4, hidden_size=8, num_layers=2, bidirectional=True, num_classes=3, dropout=0.1
    ),
    "tokens-mean": RNNConfig(vocab_size=30, embed_dim=6, hidden_size=8, num_classes=5, pooling="mean"),
    "tokens-bidirectional-regress": RNNConfig(vocab_size=30, embed_dim=6, hidden_size=8, bidirectional=True),
}


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_output_shapes(arch: str, variant: str) -> None:
    config = VARIANTS[variant]
    model = MODELS[arch](config).eval()
    out = model(_input(config))
    assert out.shape == (3, config.num_classes or config.output_size)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_last_pooling_takes_forward_end_and_backward_start(arch: str) -> None:
    config = RNNConfig(input_size=4, hidden_size=8, num_layers=2, bidirectional=True, num_classes=3)
    model = MODELS[arch](config).eval()
    x = _input(config)
    out, _ = model.rnn(x)  # (B, T, 2*hidden)
    # forward direction ends at t=T-1, backward direction at t=0
    expected = model.head(torch.cat([out[:, -1, :8], out[:, 0, 8:]], dim=-1))
    torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_mean_pooling_averages_every_step(arch: str) -> None:
    config = RNNConfig(vocab_size=30, embed_dim=6, hidden_size=8, num_classes=3, pooling="mean")
    model = MODELS[arch](config).eval()
    x = _input(config)
    out, _ = model.rnn(model.embed(x))
    torch.testing.assert_close(model(x), model.head(out.mean(dim=1)))


def test_single_layer_with_dropout_builds_without_torch_warning() -> None:
    # torch warns when nn.LSTM gets dropout with one layer; filterwarnings=error turns that into a failure
    model = LSTM(RNNConfig(input_size=2, hidden_size=4, dropout=0.3))
    assert model.rnn.dropout == 0.0 and model.drop.p == 0.3


def test_config_needs_input_size_or_vocab_size_and_a_known_pooling() -> None:
    with pytest.raises(ValueError, match="set input_size"):
        RNNConfig()
    with pytest.raises(ValueError, match="pooling must be"):
        RNNConfig(input_size=3, pooling="max")  # type: ignore[arg-type]


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_overfits_a_batch_of_eight(arch: str) -> None:
    model = MODELS[arch](RNNConfig(input_size=4, hidden_size=32, num_classes=4))
    x, y = torch.randn(8, 6, 4), torch.randint(0, 4, (8,))
    before, after = overfit(model, lambda m: F.cross_entropy(m(x), y), steps=40)
    assert after < before / 2
