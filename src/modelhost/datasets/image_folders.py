"""Image folder datasets: an archive with one folder per class of PNG or JPEG files.

Layout: ``<class>/<image>`` at the top of the archive, or inside one wrapping folder
(``flowers/<class>/<image>``, what zipping a folder gives). Class names pass the same
allow-list as every other name; hidden files and ``__MACOSX`` folders are ignored.

Decoding is Pillow restricted to its PNG and JPEG decoders. Each image's size is checked
from its header before any pixel is decoded (a decompression bomb is a small file that
declares a huge image), and so is the decoded total across the dataset.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

from modelhost.datasets.archives import ArchiveLimits, Member, read_archive
from modelhost.datasets.formats import refuse_unsafe
from modelhost.errors import InvalidInput, PayloadTooLarge, UnsafeContent
from modelhost.names import check_name

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on decoded pixels: per image, and in bytes for the whole dataset."""

    max_pixels: int = 1 << 24  # 4096 x 4096; Pillow's own bomb check starts at ~89 M
    max_total_bytes: int = 1 << 30
    archive: ArchiveLimits = field(default_factory=ArchiveLimits)


def _ignored(path: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in path)


def _class_paths(members: list[Member]) -> list[Member]:
    """Members with the optional single wrapping folder removed."""
    tops = {m.path[0] for m in members}
    if len(tops) == 1 and all(len(m.path) == 3 for m in members):
        return [Member(m.path[1:], m.data) for m in members]
    return members


def decode_image(data: bytes, where: str, max_pixels: int) -> np.ndarray:
    """A PNG or JPEG as uint8 pixels: HxW for grey images, HxWx3 for everything else.

    16-bit grey keeps its top 8 bits; palette and alpha images become RGB (alpha dropped).
    """
    try:
        with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise UnsafeContent(
                    f"{where}: {w}x{h} pixels is over the {max_pixels} pixel limit (a decompression bomb?)"
                )
            if img.mode.startswith("I"):  # 16/32-bit grey
                return (np.asarray(img, dtype=np.uint32).clip(0, 65535) >> 8).astype(np.uint8)
            mode = "L" if Image.getmodebase(img.mode) == "L" else "RGB"
            return np.asarray(img.convert(mode), dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UnsafeContent(f"{where}: {e}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InvalidInput(f"{where}: not a readable PNG or JPEG image ({e})") from e


def read_image_folders(
    data: bytes, filename: str, kind: str, limits: ImageLimits | None = None
) -> tuple[list[np.ndarray], list[str]]:
    """Decode every image of an image-folder archive (``kind`` "zip" or "tar").

    Returns the images and, for each, its class folder name. Raises InvalidInput for a
    bad layout, class name or image; UnsafeContent for pickles and bombs.
    """
    limits = limits or ImageLimits()
    members = [m for m in read_archive(data, filename, kind, limits.archive) if not _ignored(m.path)]
    images: list[np.ndarray] = []
    labels: list[str] = []
    total = 0
    for member in _class_paths(members):
        entry = "/".join(member.path)
        where = f"{filename!r} entry {entry!r}"
        refuse_unsafe(member.data[:2], entry)
        if len(member.path) != 2:
            raise InvalidInput(f"{where}: images must sit in class folders (CLASS/IMAGE.png)")
        label, name = member.path
        try:
            check_name("class folder", label)
        except InvalidInput as e:
            raise InvalidInput(f"{where}: {e.message}") from e
        if not name.lower().endswith(IMAGE_SUFFIXES):
            raise InvalidInput(f"{where}: only {', '.join(IMAGE_SUFFIXES)} files are accepted")
        image = decode_image(member.data, where, limits.max_pixels)
        total += image.nbytes
        if total > limits.max_total_bytes:
            raise PayloadTooLarge(f"{filename!r}: decoded images exceed {limits.max_total_bytes} bytes")
        images.append(image)
        labels.append(label)
    if not images:
        raise InvalidInput(f"{filename!r} holds no images; put PNG or JPEG files in one folder per class")
    return images, labels
