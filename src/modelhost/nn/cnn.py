"""Convolutional image classifier; the default config is the classic MNIST network.

Input is ``(B, C, H, W)`` float, or ``(B, C*H*W)`` flat rows as the serving plane sends them: a flat row
is reshaped in channels-first (``C, H, W``) row-major order, i.e. exactly what ``image.flatten(1)``
produces, so for one-channel images it is the image read row by row. Output is ``(B, num_classes)`` logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class CNNConfig:
    in_channels: int = 1
    image_size: int = 28  # square images: H == W == image_size
    num_classes: int = 10
    channels: list[int] = field(default_factory=lambda: [32, 64])  # one conv block per entry
    kernel_size: int = 3
    dense: int = 64  # width of the hidden dense layer; 0 = none, the flattened features feed the classifier
    dropout: float = 0.0  # applied before each dense layer
    batch_norm: bool = False

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("channels must list at least one conv width, e.g. [32, 64]")
        if self.kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be odd for 'same' padding, got {self.kernel_size}; use 3 or 5"
            )


class CNN(nn.Module):
    """conv → [BN] → ReLU → maxpool 2 per entry of ``channels`` → flatten → dense → ReLU → dense.

    Convs use "same" padding; a block pools only while the feature map's side is at least 2, so any
    depth works for any image size (an 8x8 digit goes 8 → 4 → 2 → 1 → 1 ...).
    """

    def __init__(self, config: CNNConfig):
        super().__init__()
        self.config = config
        blocks: list[nn.Module] = []
        width, side = config.in_channels, config.image_size
        for out in config.channels:
            k = config.kernel_size
            blocks.append(nn.Conv2d(width, out, k, padding=k // 2, bias=not config.batch_norm))
            if config.batch_norm:
                blocks.append(nn.BatchNorm2d(out))
            blocks.append(nn.ReLU())
            if side >= 2:
                blocks.append(nn.MaxPool2d(2))
                side //= 2
            width = out
        self.features = nn.Sequential(*blocks)
        head: list[nn.Module] = [nn.Flatten()]
        flat = width * side * side
        if config.dense:
            head += [nn.Dropout(config.dropout), nn.Linear(flat, config.dense), nn.ReLU()]
            flat = config.dense
        head += [nn.Dropout(config.dropout), nn.Linear(flat, config.num_classes)]
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        if x.dim() == 2:  # (B, C*H*W) flat rows from the serving plane
            # sizes are traced tensors under ONNX export; the exported graph checks the reshape itself
            if not torch.onnx.is_in_onnx_export() and x.shape[1] != c.in_channels * c.image_size**2:
                raise ValueError(
                    f"flat input has {x.shape[1]} features; expected in_channels * image_size**2 = "
                    f"{c.in_channels * c.image_size**2}"
                )
            x = x.reshape(-1, c.in_channels, c.image_size, c.image_size)  # (B, C, H, W)
        elif x.dim() != 4:
            raise ValueError(f"expected (B, C, H, W) or (B, C*H*W) input, got shape {tuple(x.shape)}")
        x = self.features(x)  # (B, channels[-1], h, w), h == w == image_size halved per pooled block
        logits: torch.Tensor = self.classifier(x)  # (B, num_classes)
        return logits
