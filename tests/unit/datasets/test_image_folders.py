"""Image folder archives: layout, class names, decoding, and decompression bombs."""

from __future__ import annotations

import io
import tarfile
import zlib

import numpy as np
import pytest
from PIL import Image

from modelhost.datasets.image_folders import ImageLimits, read_image_folders
from modelhost.errors import InvalidInput, PayloadTooLarge, UnsafeContent
from tests.unit.datasets.craft import image_bytes, png_header_only, tar_bytes, tar_info, zip_bytes

GREY = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
RGB = np.dstack([GREY, GREY // 2, 255 - GREY])


def test_zip_of_class_folders_decodes_every_image() -> None:
    data = zip_bytes(
        [
            ("cats/1.png", image_bytes(GREY)),
            ("dogs/2.PNG", image_bytes(RGB)),
            ("cats/3.jpg", image_bytes(RGB, "JPEG", quality=100, subsampling=0)),
            ("__MACOSX/cats/._1.png", b"resource fork"),
            ("cats/.DS_Store", b"finder"),
        ]
    )
    images, labels = read_image_folders(data, "pets.zip", "zip")

    assert labels == ["cats", "dogs", "cats"]
    assert [im.shape for im in images] == [(3, 4), (3, 4, 3), (3, 4, 3)]
    assert all(im.dtype == np.uint8 for im in images)
    assert np.array_equal(images[0], GREY) and np.array_equal(images[1], RGB)  # PNG is lossless
    assert np.abs(images[2].astype(int) - RGB).max() < 8  # JPEG is close


def test_one_wrapping_folder_is_allowed_and_tar_gz_works() -> None:
    members = [(tar_info(f"pets/{c}/{i}.png"), image_bytes(GREY + i)) for c in ("a", "b") for i in range(2)]
    images, labels = read_image_folders(tar_bytes(members), "pets.tar.gz", "tar")
    assert labels == ["a", "a", "b", "b"]
    assert images[3][0, 0] == 1


def test_modes_become_grey_or_rgb() -> None:
    palette = Image.fromarray(RGB).convert("P")
    rgba = Image.fromarray(np.dstack([RGB, np.full((3, 4), 7, np.uint8)]))
    grey16 = Image.fromarray((GREY.astype(np.uint16) << 8) | 0xFF)
    entries = []
    for name, img in (("p", palette), ("rgba", rgba), ("g16", grey16)):
        out = io.BytesIO()
        img.save(out, format="PNG")
        entries.append((f"c/{name}.png", out.getvalue()))
    images, _ = read_image_folders(zip_bytes(entries), "m.zip", "zip")
    assert [im.shape for im in images] == [(3, 4, 3), (3, 4, 3), (3, 4)]
    assert np.array_equal(images[1], RGB)  # alpha dropped
    assert np.array_equal(images[2], GREY)  # top 8 of 16 bits


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ([("a.png", image_bytes(GREY))], r"entry 'a.png': images must sit in class folders"),
        ([("x/y/z/a.png", image_bytes(GREY))], r"entry 'x/y/z/a.png': images must sit in class folders"),
        ([("-bad/a.png", image_bytes(GREY))], r"entry '-bad/a.png': invalid class folder name '-bad'"),
        ([("caf\u00e9/a.png", image_bytes(GREY))], "invalid class folder name"),
        ([("c/a.gif", b"GIF89a")], r"entry 'c/a.gif': only .png, .jpg, .jpeg files are accepted"),
        ([("c/a.png", b"not an image at all")], "entry 'c/a.png': not a readable PNG or JPEG image"),
        ([("c/a.png", image_bytes(GREY)[:40])], "entry 'c/a.png': not a readable PNG or JPEG image"),
        ([("c/a.png", image_bytes(GREY, "GIF"))], "not a readable PNG or JPEG"),  # a GIF named .png
        ([("__MACOSX/c/a.png", b"junk")], "holds no images"),
    ],
    ids=[
        "no-folder",
        "too-deep",
        "bad-class",
        "non-ascii-class",
        "gif",
        "garbage",
        "truncated",
        "disguised",
        "empty",
    ],
)
def test_bad_layouts_and_images_name_the_entry(entries: list, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        read_image_folders(zip_bytes(entries), "x.zip", "zip")


def test_pickles_in_an_image_archive_are_refused() -> None:
    entries = [("c/a.png", image_bytes(GREY)), ("c/model.pkl", b"\x80\x04K\x01.")]
    with pytest.raises(UnsafeContent, match=r"'c/model.pkl' looks like a pickle"):
        read_image_folders(zip_bytes(entries), "x.zip", "zip")
    disguised = [("c/a.png", b"\x80\x05" + b"x" * 30)]
    with pytest.raises(UnsafeContent, match=r"'c/a.png' looks like a pickle"):
        read_image_folders(zip_bytes(disguised), "x.zip", "zip")


def test_a_png_decompression_bomb_is_refused_before_decoding() -> None:
    # 100000 x 100000 grey pixels (10 GB) declared by a 60-byte file: Pillow's own limit
    with pytest.raises(UnsafeContent, match=r"entry 'c/bomb.png': .*decompression bomb"):
        read_image_folders(zip_bytes([("c/bomb.png", png_header_only(100_000, 100_000))]), "x.zip", "zip")


def test_an_image_over_the_pixel_limit_is_refused_from_its_header() -> None:
    # 5000 x 5000 zeros: 25 MB of pixels in a ~25 KB file, under Pillow's limit but over ours
    rows = zlib.compress(bytes(5001 * 5000), 9)
    bomb = png_header_only(5000, 5000, rows)
    assert len(bomb) < 50_000
    with pytest.raises(UnsafeContent, match=r"5000x5000 pixels is over the 16777216 pixel limit"):
        read_image_folders(zip_bytes([("c/bomb.png", bomb)]), "x.zip", "zip")


def test_decoded_total_is_capped() -> None:
    entries = [(f"c/{i}.png", image_bytes(GREY)) for i in range(5)]
    with pytest.raises(PayloadTooLarge, match=r"decoded images exceed 48 bytes"):
        read_image_folders(zip_bytes(entries), "x.zip", "zip", ImageLimits(max_total_bytes=48))


def test_tar_links_are_refused_in_image_folders() -> None:
    members = [
        (tar_info("c/a.png"), image_bytes(GREY)),
        (tar_info("c/b.png", tarfile.SYMTYPE, "../../etc/x"), b""),
    ]
    with pytest.raises(UnsafeContent, match=r"'c/b.png' is a symbolic link"):
        read_image_folders(tar_bytes(members), "x.tgz", "tar")
