from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modelhost.nn.cnn import CNN, CNNConfig
from tests.unit.nn.helpers import overfit


def _layers(model: nn.Module, kind: type[nn.Module]) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


def test_default_is_the_classic_mnist_network() -> None:
    model = CNN(CNNConfig())
    convs, linears = _layers(model, nn.Conv2d), _layers(model, nn.Linear)
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 32, (3, 3)),
        (32, 64, (3, 3)),
    ]
    assert len(_layers(model, nn.MaxPool2d)) == 2
    # 28 -> 14 -> 7: the flattened features are 64 * 7 * 7
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(64 * 7 * 7, 64), (64, 10)]
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    ("config", "pools", "flat_features"),
    [
        (CNNConfig(image_size=8), 2, 64 * 2 * 2),  # 8x8 digits: 8 -> 4 -> 2
        (
            CNNConfig(image_size=8, channels=[4, 8, 8, 16, 16]),
            3,
            16,
        ),  # 8 -> 4 -> 2 -> 1, then no more pooling
        (CNNConfig(image_size=28, channels=[8, 8, 16, 16], kernel_size=5), 4, 16 * 1 * 1),  # 28->14->7->3->1
        (
            CNNConfig(in_channels=3, image_size=16, num_classes=5, batch_norm=True, dropout=0.2, dense=0),
            2,
            64 * 4 * 4,
        ),
    ],
    ids=["digits-8x8", "deeper-8x8", "deeper-28x28-k5", "rgb-bn-no-dense"],
)
def test_variants_shapes(config: CNNConfig, pools: int, flat_features: int) -> None:
    model = CNN(config).eval()
    x = torch.randn(3, config.in_channels, config.image_size, config.image_size)
    assert model(x).shape == (3, config.num_classes)
    assert len(_layers(model, nn.MaxPool2d)) == pools
    assert len(_layers(model, nn.BatchNorm2d)) == (len(config.channels) if config.batch_norm else 0)
    assert _layers(model, nn.Linear)[0].in_features == flat_features


@pytest.mark.parametrize("in_channels", [1, 3])
def test_flat_rows_are_images_in_channels_first_order(in_channels: int) -> None:
    model = CNN(CNNConfig(in_channels=in_channels, image_size=8, channels=[4, 8], dense=16)).eval()
    images = torch.randn(4, in_channels, 8, 8)
    assert torch.equal(model(images.flatten(1)), model(images))


def test_wrong_input_shapes_are_refused_with_the_expected_size() -> None:
    model = CNN(CNNConfig(image_size=8))
    with pytest.raises(ValueError, match="65 features; expected in_channels \\* image_size\\*\\*2 = 64"):
        model(torch.randn(2, 65))
    with pytest.raises(ValueError, match=r"got shape \(2, 8, 8\)"):
        model(torch.randn(2, 8, 8))


def test_config_refuses_even_kernels_and_no_convs() -> None:
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        CNNConfig(kernel_size=4)
    with pytest.raises(ValueError, match="at least one conv"):
        CNNConfig(channels=[])


def test_overfits_a_batch_of_eight() -> None:
    model = CNN(CNNConfig(image_size=8, channels=[8, 16], dense=32))
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    before, after = overfit(model, lambda m: F.cross_entropy(m(x), y), steps=30)
    assert after < before / 2
