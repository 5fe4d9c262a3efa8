"""Augmentation: random only through the given generator (same state, bitwise same output), off
when the spec is off, and each change doing what it says."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from modelhost.datasets.images import AugmentSpec, ImagePreprocessing, augment
from modelhost.errors import InvalidInput

ALL = AugmentSpec(shift=2, rotate=15, flip=0.5)


def _batch(n: int = 16, channels: int = 3, height: int = 9, width: int = 11) -> torch.Tensor:
    return torch.rand(n, channels, height, width, generator=torch.Generator().manual_seed(123))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_same_generator_state_gives_bitwise_the_same_output():
    x = _batch()
    assert torch.equal(augment(x, ALL, _gen(7)), augment(x, ALL, _gen(7)))
    assert not torch.equal(augment(x, ALL, _gen(7)), augment(x, ALL, _gen(8)))


def test_resuming_from_a_saved_generator_state_repeats_the_next_batches():
    x, g = _batch(), _gen(3)
    augment(x, ALL, g)
    saved = g.get_state()  # what a checkpoint stores
    expected = [augment(x, ALL, g) for _ in range(2)]
    assert not torch.equal(expected[0], expected[1])  # the stream moves on between batches
    resumed = torch.Generator()
    resumed.set_state(saved)
    assert all(torch.equal(augment(x, ALL, resumed), e) for e in expected)


def test_global_rng_is_neither_used_nor_touched():
    x = _batch()
    torch.manual_seed(0)
    a = augment(x, ALL, _gen(5))
    after_a = torch.rand(1)
    torch.manual_seed(99)
    b = augment(x, ALL, _gen(5))
    assert torch.equal(a, b)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), after_a)


def test_all_off_is_the_identity():
    x = _batch()
    assert AugmentSpec() == AugmentSpec(shift=0, rotate=0, flip=0) and not AugmentSpec().enabled
    assert augment(x, AugmentSpec(), _gen(0)) is x


def test_flip_mirrors_exactly():
    x = _batch()
    assert torch.equal(augment(x, AugmentSpec(flip=1.0), _gen(0)), x.flip(-1))
    out = augment(x, AugmentSpec(flip=0.5), _gen(0))
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x, strict=True)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))  # each image: one or the other
    assert any(flipped) and any(kept)


def _shifted(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """x moved right by dx and down by dy, zeros coming in."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_shift_moves_each_image_by_whole_pixels_within_the_bound():
    x, s = _batch(32), 2
    out = augment(x, AugmentSpec(shift=s), _gen(1))
    moves = set()
    for o, xi in zip(out, x, strict=True):
        found = [
            (dx, dy)
            for dx in range(-s, s + 1)
            for dy in range(-s, s + 1)
            if torch.allclose(o, _shifted(xi, dx, dy), atol=1e-5)
        ]
        assert len(found) == 1, found
        moves.add(found[0])
    assert len(moves) > 5  # drawn per image, not once per batch


def test_rotation_turns_about_the_centre():
    x = _batch(8, height=9, width=9)
    out = augment(x, AugmentSpec(rotate=30), _gen(2))
    torch.testing.assert_close(out[..., 4, 4], x[..., 4, 4])  # the centre pixel stays put
    assert all(not torch.allclose(o, xi, atol=1e-3) for o, xi in zip(out, x, strict=True))
    # a constant image stays that constant where no pixel came from outside (the middle)
    flat = augment(torch.full((4, 1, 9, 9), 0.7), AugmentSpec(rotate=30), _gen(2))
    torch.testing.assert_close(flat[..., 3:6, 3:6], torch.full((4, 1, 3, 3), 0.7))


def test_rotation_keeps_distances_on_non_square_images():
    """A rotation in [-1, 1] grid units would shear a non-square image; in pixels it must not."""
    x = torch.zeros(1, 1, 21, 41)
    x[0, 0, 10, 30] = 1.0  # 10 pixels right of the centre (10, 20)
    out = augment(x.expand(64, 1, 21, 41).contiguous(), AugmentSpec(rotate=90), _gen(4))
    ys, xs = torch.meshgrid(torch.arange(21.0), torch.arange(41.0), indexing="ij")
    mass = out[:, 0].sum(dim=(1, 2))
    cy, cx = (out[:, 0] * ys).sum(dim=(1, 2)) / mass, (out[:, 0] * xs).sum(dim=(1, 2)) / mass
    radius = ((cy - 10) ** 2 + (cx - 20) ** 2).sqrt()
    torch.testing.assert_close(radius, torch.full_like(radius, 10.0), atol=0.3, rtol=0)


def test_pixels_from_outside_get_the_fill_value():
    p = ImagePreprocessing(height=8, width=8, channels=3, mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.1])
    white = torch.from_numpy(p.transform(torch.full((4, 8, 8, 3), 255).numpy()))
    out = p.augment(white, AugmentSpec(shift=3), _gen(6))
    black = torch.tensor([-2.5, -2.0, -3.0]).reshape(1, 3, 1, 1)  # transform of 0: (0 - mean) / std
    is_black = torch.isclose(out, black.expand_as(out), atol=1e-5)
    is_white = torch.isclose(out, white, atol=1e-5)
    assert bool((is_black | is_white).all()) and bool(is_black.any())


def test_bad_batches_and_specs_are_refused():
    with pytest.raises(InvalidInput, match=r"expected an \(N,C,H,W\) float batch"):
        augment(torch.zeros(2, 8, 8), ALL, _gen(0))
    with pytest.raises(InvalidInput, match="float batch"):
        augment(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), ALL, _gen(0))
    with pytest.raises(ValidationError, match="flip"):
        AugmentSpec(flip=1.5)
    with pytest.raises(ValidationError, match="shift"):
        AugmentSpec(shift=-1)
    with pytest.raises(ValidationError, match="scale"):
        AugmentSpec.model_validate({"scale": 2})


@pytest.mark.gpu
def test_deterministic_on_the_accelerator_with_a_device_generator():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = _batch().to(device)
    runs = [augment(x, ALL, torch.Generator(device).manual_seed(11)) for _ in range(2)]
    assert runs[0].device.type == device
    assert torch.equal(runs[0], runs[1])
    cpu_gen = augment(x, ALL, _gen(11))  # a CPU generator drives a batch on any device
    assert cpu_gen.device.type == device
