"""Built-in sample datasets, no network needed: scikit-learn's bundled tables, its digits as
an image-folder archive, and an English text corpus shipped in ``datasets/data/``."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, get_args

import numpy as np
from PIL import Image

from modelhost.datasets.formats import to_csv

TableSampleName = Literal["digits", "iris", "wine", "breast_cancer"]
SampleName = Literal["digits", "iris", "wine", "breast_cancer", "digits_images", "classics"]
SAMPLES: tuple[SampleName, ...] = get_args(SampleName)
CORPUS_FILE = "classics.txt"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the sample's bytes (and sha256) never change


@dataclass(frozen=True)
class Sample:
    """A sample's bytes as an upload would carry them."""

    data: bytes
    filename: str
    target: str | None
    description: str


def _bunch(name: TableSampleName) -> Any:  # an sklearn Bunch
    from sklearn import datasets as skd

    loader = {
        "digits": skd.load_digits,
        "iris": skd.load_iris,
        "wine": skd.load_wine,
        "breast_cancer": skd.load_breast_cancer,
    }[name]
    return loader()


def sample_csv(name: TableSampleName) -> tuple[bytes, str]:
    """The sample as CSV bytes with a ``label`` column, and the name of that target column."""
    bunch = _bunch(name)
    features = (
        [f"f{i}" for i in range(bunch.data.shape[1])] if name == "digits" else list(bunch.feature_names)
    )
    features = [f.replace(" ", "_").replace("(", "").replace(")", "").replace("/", "_") for f in features]
    x = bunch.data.astype(np.float64)
    rows = [
        [*(int(v) if name == "digits" else float(v) for v in xi), int(t)]
        for xi, t in zip(x, bunch.target, strict=True)
    ]
    return to_csv([*features, "label"], rows), "label"


def digits_images_zip() -> bytes:
    """scikit-learn's digits as ``<digit>/<index>.png``: 8x8 grey, 0..16 scaled to 0..255."""
    bunch = _bunch("digits")
    pixels = np.rint(bunch.images * (255 / 16)).astype(np.uint8)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:  # PNG is compressed already
        for i, (image, digit) in enumerate(zip(pixels, bunch.target, strict=True)):
            png = io.BytesIO()
            Image.fromarray(image).save(png, format="PNG")  # uint8 HxW: mode L
            zf.writestr(zipfile.ZipInfo(f"{digit}/{i:04d}.png", _ZIP_TIME), png.getvalue())
    return out.getvalue()


def corpus_text() -> bytes:
    """The bundled English corpus (UTF-8): public-domain poems and prose, and fables retold."""
    return (resources.files("modelhost.datasets") / "data" / CORPUS_FILE).read_bytes()


def load_sample(name: SampleName) -> Sample:
    """The sample's upload bytes, filename (which gives its format) and default target."""
    if name == "digits_images":
        return Sample(digits_images_zip(), "digits_images.zip", None, "scikit-learn's digits as 8x8 PNGs")
    if name == "classics":
        return Sample(corpus_text(), CORPUS_FILE, None, "public-domain English poems and prose")
    data, target = sample_csv(name)
    return Sample(data, f"{name}.csv", target, f"scikit-learn's {name} dataset")
