"""Image preprocessing (resize, channels, per-channel normalisation) and training-time augmentation.

:class:`ImagePreprocessing` is fitted on the training images and saved in the manifest;
``transform`` takes images of any size and layout and returns what the model was trained on.
Resizing is Pillow's bilinear filter on float32 planes, the one function training and serving
both call, so the two never see differently resampled pixels.

This module must stay importable without torch (the API process imports manifests):
:func:`augment`, the only torch user, imports it when called.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelhost.errors import InvalidInput

if TYPE_CHECKING:
    import torch

Layout = Literal["auto", "NHWC", "NCHW"]
MAX_SIDE = 8192
"""Largest height or width accepted, in and out: a bound on the memory one request can claim."""
_CHANNELS = (1, 3, 4)  # gray, RGB, RGBA (alpha is dropped)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as Pillow's convert("L")


class AugmentSpec(BaseModel):
    """Random training-time changes to each image; all off by default, never applied at evaluation."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    shift: int = Field(0, ge=0, le=64)
    """Largest shift in pixels, drawn per image and axis from [-shift, shift]."""
    rotate: float = Field(0.0, ge=0, le=180)
    """Largest rotation in degrees, drawn per image from [-rotate, rotate]."""
    flip: float = Field(0.0, ge=0, le=1)
    """Probability of a horizontal flip."""

    @property
    def enabled(self) -> bool:
        return self.shift > 0 or self.rotate > 0 or self.flip > 0


class ImagePreprocessing(BaseModel):
    """Images -> (N, channels, height, width) float32: scaled to [0, 1] by ``max_value``,
    converted to the trained channel count, resized, then ``(x - mean) / std`` per channel."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    kind: Literal["image"] = "image"
    height: int = Field(ge=1, le=MAX_SIDE)
    width: int = Field(ge=1, le=MAX_SIDE)
    channels: Literal[1, 3]
    max_value: float = Field(255.0, gt=0, allow_inf_nan=False)
    """The value of white in the input (255 for PNG/JPEG and the digits sample; 1.0 for [0, 1] data)."""
    mean: list[float]
    """Per-channel mean of the training images after resizing and scaling to [0, 1]."""
    std: list[float]

    @model_validator(mode="after")
    def _per_channel(self) -> ImagePreprocessing:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean and std need one value per channel ({self.channels})")
        if not all(math.isfinite(s) and s > 0 for s in self.std) or not all(map(math.isfinite, self.mean)):
            raise ValueError("std must be positive and mean and std finite")
        return self

    @classmethod
    def fit(
        cls,
        images: np.ndarray | Sequence[np.ndarray],
        height: int,
        width: int,
        channels: Literal[1, 3],
        max_value: float = 255.0,
        layout: Layout = "auto",
    ) -> ImagePreprocessing:
        """Mean and std per channel over the training images only, after the same resize."""
        zero, one = [0.0] * channels, [1.0] * channels
        raw = cls(height=height, width=width, channels=channels, max_value=max_value, mean=zero, std=one)
        x = raw.transform(images, layout).astype(np.float64)
        if not len(x):
            raise InvalidInput("images: no training images to fit on")
        std = x.std(axis=(0, 2, 3))
        std[std < 1e-8] = 1.0  # a constant channel is centred, not divided by ~0
        return raw.model_copy(update={"mean": x.mean(axis=(0, 2, 3)).tolist(), "std": std.tolist()})

    def transform(self, images: np.ndarray | Sequence[np.ndarray], layout: Layout = "auto") -> np.ndarray:
        """A batch (N,H,W), (N,H,W,C) or (N,C,H,W) of any size, uint8 or float, or a list of
        differently sized (H,W) / (H,W,C) / (C,H,W) images. ``auto`` takes the last axis as
        channels when it is 1, 3 or 4, else axis 1; pass ``layout`` where that guess is wrong.
        Raises InvalidInput naming the image whose shape or values do not fit."""
        if isinstance(images, np.ndarray):
            if images.ndim not in (3, 4):
                raise InvalidInput(
                    f"images: expected a batch (N,H,W), (N,H,W,C) or (N,C,H,W), got shape {images.shape}"
                )
            batch = _channels_last(images, layout, "images") if images.ndim == 4 else images[..., None]
            x = self._planes(batch, "images")
            if x.shape[1:3] != (self.height, self.width) and len(x):
                x = np.stack([_resize(img, self.height, self.width) for img in x])
        elif isinstance(images, Sequence) and not isinstance(images, str | bytes) and len(images):
            x = np.stack([self._one(img, i) for i, img in enumerate(images)])
        else:
            raise InvalidInput(f"images: expected an array or a non-empty list of images, got {images!r:.40}")
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)

    def augment(self, batch: torch.Tensor, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
        """:func:`augment` on a batch this preprocessing produced; pixels moved in from outside
        the image are black (the normalised value of 0), like the border of a digit."""
        fill = [-m / s for m, s in zip(self.mean, self.std, strict=True)]
        return augment(batch, spec, generator, fill)

    def _one(self, image: np.ndarray, i: int) -> np.ndarray:
        where = f"images[{i}]"
        try:
            img = np.asarray(image)
        except ValueError:  # ragged nested lists
            raise InvalidInput(
                f"{where}: rows of different lengths; expected (H,W), (H,W,C) or (C,H,W)"
            ) from None
        if img.ndim == 2:
            img = img[..., None]
        elif img.ndim == 3:
            img = _channels_last(img[None], "auto", where)[0]
        else:
            raise InvalidInput(f"{where}: expected (H,W), (H,W,C) or (C,H,W), got shape {img.shape}")
        x = self._planes(img[None], where)[0]
        return x if x.shape[:2] == (self.height, self.width) else _resize(x, self.height, self.width)

    def _planes(self, batch: np.ndarray, where: str) -> np.ndarray:
        """(N,H,W,C) numbers -> (N,H,W,channels) float32 in [0, 1] (for inputs in range)."""
        if batch.dtype.kind not in "uif":
            raise InvalidInput(f"{where}: pixels must be numbers, got dtype {batch.dtype}")
        if max(batch.shape[1:3], default=0) > MAX_SIDE or min(batch.shape[1:3], default=1) < 1:
            raise InvalidInput(f"{where}: image size {batch.shape[1:3]} outside 1..{MAX_SIDE}")
        x = batch.astype(np.float32) / np.float32(self.max_value)
        if not np.isfinite(x).all():
            raise InvalidInput(f"{where}: pixels contain NaN or infinity")
        c = x.shape[-1]
        if c == 4:  # RGBA: the colour, without its alpha
            x, c = x[..., :3], 3
        if c == self.channels:
            return x
        if self.channels == 3:
            return np.repeat(x, 3, axis=-1)
        return (x @ _LUMA)[..., None]


def _channels_last(batch: np.ndarray, layout: Layout, where: str) -> np.ndarray:
    """A 4-d batch as (N,H,W,C)."""
    last, first = batch.shape[-1] in _CHANNELS, batch.shape[1] in _CHANNELS
    if layout == "NHWC" or (layout == "auto" and last):
        if batch.shape[-1] not in _CHANNELS:
            raise InvalidInput(f"{where}: {batch.shape[-1]} channels; expected 1, 3 or 4")
        return batch
    if layout == "NCHW" or first:
        if batch.shape[1] not in _CHANNELS:
            raise InvalidInput(f"{where}: {batch.shape[1]} channels; expected 1, 3 or 4")
        return batch.transpose(0, 2, 3, 1)
    raise InvalidInput(
        f"{where}: shape {batch.shape[1:]} has no channel axis of 1, 3 or 4 first or last "
        "(expected (H,W,C) or (C,H,W))"
    )


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H,W,C) float32 -> (height,width,C) with Pillow's bilinear filter (antialiased when
    shrinking), one float plane at a time so no precision is lost to 8 bits."""
    planes = [Image.fromarray(np.ascontiguousarray(image[..., c])) for c in range(image.shape[-1])]
    resized = [np.asarray(p.resize((width, height), Image.Resampling.BILINEAR)) for p in planes]
    return np.stack(resized, axis=-1)


def augment(
    batch: torch.Tensor,
    spec: AugmentSpec,
    generator: torch.Generator,
    fill: float | Sequence[float] = 0.0,
) -> torch.Tensor:
    """Per-image random flip, rotation and shift of an (N,C,H,W) float batch, in one batched
    ``grid_sample``. Every random number comes from ``generator`` (drawn on its device), in a
    fixed order, so the same generator state gives bitwise the same output: a resumed run
    repeats its augmentation exactly. ``fill`` (a value, or one per channel) is what pixels
    moved in from outside the image get. All off: the batch itself is returned."""
    if not spec.enabled:
        return batch
    import torch
    import torch.nn.functional as F

    if batch.ndim != 4 or not batch.is_floating_point():
        raise InvalidInput(
            f"augment: expected an (N,C,H,W) float batch, got {tuple(batch.shape)} {batch.dtype}"
        )
    n, _, height, width = batch.shape
    dev = generator.device
    if spec.flip > 0:  # torch.flip: an exact mirror, no resampling
        flip = (torch.rand(n, generator=generator, device=dev) < spec.flip).to(batch.device)
        batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    if spec.rotate == 0 and spec.shift == 0:
        return batch
    angle = (torch.rand(n, generator=generator, device=dev, dtype=torch.float64) * 2 - 1) * math.radians(
        spec.rotate
    )
    shift = torch.randint(-spec.shift, spec.shift + 1, (n, 2), generator=generator, device=dev)
    cos, sin = angle.cos(), angle.sin()
    # affine_grid maps output to input coordinates in [-1, 1] per axis: a rotation in pixels
    # is S^-1 R S with S = diag(W/2, H/2), so it stays a rotation on non-square images.
    theta = torch.stack(
        [
            torch.stack([cos, -sin * height / width, -2.0 * shift[:, 0] / width], dim=1),
            torch.stack([sin * width / height, cos, -2.0 * shift[:, 1] / height], dim=1),
        ],
        dim=1,
    ).to(device=batch.device, dtype=batch.dtype)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    base = torch.as_tensor(fill, dtype=batch.dtype, device=batch.device).reshape(1, -1, 1, 1)
    return (
        F.grid_sample(batch - base, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + base
    )
