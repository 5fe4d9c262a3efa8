from __future__ import annotations

import pytest
import torch

from modelhost.nn import (
    ARCHITECTURES,
    CNN,
    GPT,
    GRU,
    LSTM,
    MLP,
    CNNConfig,
    TransformerClassifier,
    build_model,
)
from modelhost.nn.bert import Bert


def test_every_architecture_is_registered_by_name() -> None:
    assert {name: module for name, (module, _) in ARCHITECTURES.items()} == {
        "mlp": MLP,
        "cnn": CNN,
        "lstm": LSTM,
        "gru": GRU,
        "transformer": TransformerClassifier,
        "gpt": GPT,
        "bert": Bert,
    }


def test_unknown_config_keys_are_ignored_so_old_and_foreign_manifests_load() -> None:
    # the training loop passes in_features/out_features to every architecture
    model = build_model("cnn", {"image_size": 8, "in_features": 64, "out_features": 10, "added_later": True})
    assert isinstance(model, CNN)
    assert model.config == CNNConfig(image_size=8)  # the rest are the dataclass defaults
    assert model(torch.randn(2, 64)).shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "config", "x", "shape"),
    [
        ("lstm", {"input_size": 3, "num_classes": 4, "unknown": 1}, torch.randn(2, 5, 3), (2, 4)),
        ("gru", {"vocab_size": 9, "output_size": 2, "unknown": 1}, torch.randint(0, 9, (2, 5)), (2, 2)),
        (
            "transformer",
            {"vocab_size": 9, "num_classes": 3, "unknown": 1},
            torch.randint(0, 9, (2, 5)),
            (2, 3),
        ),
    ],
)
def test_builds_each_architecture_from_a_dict(name: str, config: dict, x: torch.Tensor, shape: tuple) -> None:
    model = build_model(name, config).eval()
    assert model(x).shape == shape


def test_builds_gpt_from_a_dict() -> None:
    model = build_model("gpt", {"vocab_size": 11, "n_layer": 1, "n_embd": 16, "unknown": 1})
    logits, loss = model(torch.randint(0, 11, (2, 5)))
    assert logits.shape == (2, 5, 11) and loss is None


def test_unknown_architecture_names_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match="unknown architecture 'resnet'; known: mlp, cnn, lstm, gru, transformer, gpt"
    ):
        build_model("resnet", {})
