"""Image preprocessing: statistics from the training images only, layouts, channel conversion,
resizing, JSON round trips and errors that name the image."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from modelhost.datasets.images import MAX_SIDE, ImagePreprocessing
from modelhost.errors import InvalidInput


def _plain(
    height: int = 28, width: int = 28, channels: int = 1, max_value: float = 255.0
) -> ImagePreprocessing:
    """No normalisation: outputs are the resized pixels in [0, 1]."""
    return ImagePreprocessing(
        height=height,
        width=width,
        channels=channels,
        max_value=max_value,
        mean=[0.0] * channels,
        std=[1.0] * channels,
    )


def test_fit_statistics_come_from_the_training_images_only():
    train = np.concatenate(
        [np.full((5, 8, 8), 51, np.uint8), np.full((5, 8, 8), 153, np.uint8)]
    )  # 0.2 and 0.6
    p = ImagePreprocessing.fit(train, height=28, width=28, channels=1)
    assert p.mean == pytest.approx([0.4])
    assert p.std == pytest.approx([0.2])
    out = p.transform(np.full((3, 16, 12), 255, np.uint8))  # a different split, another size
    assert out.shape == (3, 1, 28, 28)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 3.0, rtol=1e-5)  # (1.0 - 0.4) / 0.2


def test_fit_is_per_channel():
    train = np.zeros((4, 6, 6, 3), np.uint8)
    train[..., 0], train[..., 1], train[:2, :, :, 2] = 255, 51, 255
    p = ImagePreprocessing.fit(train, height=6, width=6, channels=3)
    assert p.mean == pytest.approx([1.0, 0.2, 0.5])
    assert p.std == pytest.approx([1.0, 1.0, 0.5])  # constant channels: std 1, nothing divided by ~0


@pytest.mark.parametrize(
    ("batch", "layout"),
    [
        (np.zeros((2, 8, 8), np.uint8), "auto"),
        (np.zeros((2, 8, 8, 1), np.uint8), "auto"),
        (np.zeros((2, 1, 8, 8), np.float32), "auto"),
        (np.zeros((2, 8, 8, 3), np.uint8), "auto"),
        (np.zeros((2, 3, 8, 8), np.float64), "auto"),
        (np.zeros((2, 8, 8, 4), np.uint8), "auto"),
        (np.zeros((2, 3, 4, 4), np.uint8), "NCHW"),  # ambiguous: auto would read 3x4 RGBA images
        (np.zeros((2, 40, 30, 3), np.uint8), "NHWC"),
    ],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_layout_becomes_nchw_at_the_trained_size(batch, layout, channels):
    out = _plain(28, 20, channels).transform(batch, layout)
    assert out.shape == (2, channels, 28, 20)
    assert out.dtype == np.float32


def test_nchw_and_nhwc_of_the_same_pixels_agree():
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (3, 9, 7, 3), dtype=np.uint8)
    p = _plain(12, 10, 3)
    np.testing.assert_array_equal(p.transform(nhwc), p.transform(nhwc.transpose(0, 3, 1, 2)))


def test_list_of_differently_sized_images():
    images = [np.full((8, 8), 255, np.uint8), np.zeros((30, 20, 3), np.uint8), np.full((1, 5, 9), 255.0)]
    out = _plain(16, 16, 1).transform(images)
    assert out.shape == (3, 1, 16, 16)
    np.testing.assert_allclose(out[0], 1.0, rtol=1e-6)
    np.testing.assert_array_equal(out[1], 0.0)
    np.testing.assert_allclose(out[2], 1.0, rtol=1e-6)


def test_gray_to_rgb_repeats_and_rgb_to_gray_is_luma():
    gray = np.random.default_rng(1).integers(0, 256, (2, 8, 8), dtype=np.uint8)
    rgb = _plain(8, 8, 3).transform(gray)
    np.testing.assert_array_equal(rgb[:, 0], rgb[:, 1])
    np.testing.assert_array_equal(rgb[:, 0], rgb[:, 2])
    np.testing.assert_allclose(rgb[:, 0], gray / 255.0, rtol=1e-6)  # same size: no resampling at all
    colours = np.zeros((3, 4, 4, 3), np.uint8)
    for i in range(3):
        colours[i, ..., i] = 255  # pure red, green, blue
    luma = _plain(4, 4, 1).transform(colours)
    np.testing.assert_allclose(luma[:, 0, 0, 0], [0.299, 0.587, 0.114], rtol=1e-6)


def test_alpha_is_dropped():
    rgba = np.random.default_rng(2).integers(0, 256, (2, 5, 5, 4), dtype=np.uint8)
    p = _plain(7, 7, 3)
    np.testing.assert_array_equal(p.transform(rgba), p.transform(np.ascontiguousarray(rgba[..., :3])))


def test_resize_is_bilinear_and_keeps_constant_images_constant():
    p = _plain(28, 28, 1)
    np.testing.assert_allclose(p.transform(np.full((1, 8, 8), 128, np.uint8)), 128 / 255, rtol=1e-5)
    ramp = np.tile(np.arange(8, dtype=np.float32) * 32, (8, 1))[None]  # left dark, right bright
    row = p.transform(ramp)[0, 0, 14]
    assert np.all(np.diff(row) >= 0) and row[0] < row[-1]  # interpolated, order kept
    small = _plain(4, 4, 1).transform(np.full((1, 64, 64), 255, np.uint8))  # shrinking too
    np.testing.assert_allclose(small, 1.0, rtol=1e-5)


def test_uint8_and_float_inputs_agree_and_max_value_scales():
    x = np.random.default_rng(3).integers(0, 256, (4, 8, 8), dtype=np.uint8)
    p = _plain(28, 28, 1)
    np.testing.assert_allclose(p.transform(x), p.transform(x.astype(np.float64)), rtol=1e-6)
    unit = _plain(28, 28, 1, max_value=1.0)
    np.testing.assert_allclose(unit.transform(x / 255.0), p.transform(x), rtol=1e-5, atol=1e-6)


def test_json_round_trip_gives_identical_outputs():
    rng = np.random.default_rng(4)
    p = ImagePreprocessing.fit(rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8), 14, 14, 3)
    q = ImagePreprocessing.model_validate_json(p.model_dump_json())
    test = rng.integers(0, 256, (5, 11, 9, 3), dtype=np.uint8)
    assert q == p
    np.testing.assert_array_equal(q.transform(test), p.transform(test))


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((8, 8)), r"images: expected a batch .* got shape \(8, 8\)"),
        (np.zeros((2, 8, 8, 2)), r"images: shape \(8, 8, 2\) has no channel axis"),
        (np.array([[[np.nan]]]), "images: pixels contain NaN or infinity"),
        (np.array([[["a"]]]), "images: pixels must be numbers"),
        (np.zeros((1, 8, 8, 2)), "has no channel axis"),
        ([np.zeros((4, 4)), np.zeros((4,))], r"images\[1\]: expected \(H,W\), \(H,W,C\) or \(C,H,W\)"),
        ([np.zeros((4, 4)), [[1, 2], [3]]], r"images\[1\]: rows of different lengths"),
        ([], "non-empty list"),
        ("cat.png", "images: expected an array"),
        (np.zeros((1, MAX_SIDE + 1, 1), np.uint8), f"outside 1..{MAX_SIDE}"),
    ],
)
def test_bad_images_are_refused_naming_the_problem(images, message):
    with pytest.raises(InvalidInput, match=message):
        _plain().transform(images)


def test_layout_that_contradicts_the_shape_names_the_channels():
    with pytest.raises(InvalidInput, match="images: 8 channels; expected 1, 3 or 4"):
        _plain().transform(np.zeros((1, 8, 8, 8)), "NCHW")


def test_fit_needs_images_and_saved_state_is_checked():
    with pytest.raises(InvalidInput, match="no training images"):
        ImagePreprocessing.fit(np.zeros((0, 8, 8), np.uint8), 8, 8, 1)
    with pytest.raises(ValidationError, match="one value per channel"):
        ImagePreprocessing(height=8, width=8, channels=3, mean=[0.5], std=[1.0])
    with pytest.raises(ValidationError, match="std must be positive"):
        ImagePreprocessing(height=8, width=8, channels=1, mean=[0.5], std=[0.0])
    with pytest.raises(ValidationError, match="channels"):
        ImagePreprocessing(height=8, width=8, channels=2, mean=[0, 0], std=[1, 1])
