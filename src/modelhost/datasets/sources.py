"""What a dataset loads as, by kind: the one entry point training uses to read a dataset.

Every format parses to one of four sources. Uploads are stored as they came and parsed
again on every load (:func:`load_source`), after the stored bytes are checked against the
sha256 recorded at upload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from sqlalchemy.orm import Session

from modelhost.artifacts import ArtifactStore
from modelhost.datasets.arrays import parse_npy, parse_npz
from modelhost.datasets.formats import Format, Table, parse_csv, parse_jsonl, parse_text, refuse_unsafe
from modelhost.datasets.image_folders import read_image_folders
from modelhost.datasets.tables import DatasetRow
from modelhost.errors import InvalidInput, NotFound

Kind = Literal["table", "arrays", "images", "text"]
KINDS: tuple[Kind, ...] = get_args(Kind)
KIND_OF: dict[Format, Kind] = {
    "csv": "table",
    "jsonl": "table",
    "npy": "table",
    "npz": "arrays",
    "text": "text",
    "zip": "images",
    "tar": "images",
}


@dataclass(frozen=True)
class TableSource:
    """csv, jsonl, npy: typed columns of string cells."""

    table: Table


@dataclass(frozen=True)
class ArraySource:
    """npz: named arrays sharing the first dimension."""

    arrays: dict[str, np.ndarray]


@dataclass(frozen=True)
class ImageSource:
    """Image folders (zip or tar) and the digits_images sample."""

    images: list[np.ndarray]
    """uint8, HxW (grey) or HxWx3 (RGB), each its own size."""
    labels: list[str]
    """The class folder name of each image."""
    classes: list[str]
    """Sorted class names."""


@dataclass(frozen=True)
class TextSource:
    """A UTF-8 text corpus with ``\\n`` line ends."""

    text: str


DataSource = TableSource | ArraySource | ImageSource | TextSource


def parse_source(data: bytes, fmt: Format, filename: str) -> DataSource:
    """Parse and validate ``data`` as ``fmt``. Raises InvalidInput (naming the file and the
    line, entry or column), UnsafeContent (pickles, traversal, bombs) or PayloadTooLarge."""
    refuse_unsafe(data[:2], filename)
    if fmt == "csv":
        return TableSource(parse_csv(data, filename))
    if fmt == "jsonl":
        return TableSource(parse_jsonl(data, filename))
    if fmt == "npy":
        return TableSource(parse_npy(data, filename))
    if fmt == "npz":
        return ArraySource(parse_npz(data, filename))
    if fmt == "text":
        return TextSource(parse_text(data, filename))
    if fmt not in ("zip", "tar"):
        raise InvalidInput(f"format: {fmt!r} is not a dataset format")
    images, labels = read_image_folders(data, filename, fmt)
    return ImageSource(images=images, labels=labels, classes=sorted(set(labels)))


def load_source(s: Session, store: ArtifactStore, dataset_id: int) -> DataSource:
    """The dataset's contents, verified against the sha256 recorded at upload.

    Raises NotFound for an unknown id and ArtifactCorrupted when the bytes changed.
    """
    row = s.get(DatasetRow, dataset_id)
    if row is None:
        raise NotFound(f"dataset {dataset_id} not found")
    data = store.get(row.artifact_key, expected_sha256=row.sha256)
    return parse_source(data, row.format, f"{row.name}.{row.format}")  # type: ignore[arg-type]
