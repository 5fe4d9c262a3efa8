"""The built-in samples: no network, fixed bytes, and what each parses to."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from sklearn.datasets import load_digits

from modelhost.datasets.formats import detect_format
from modelhost.datasets.samples import SAMPLES, load_sample
from modelhost.datasets.sources import ImageSource, TableSource, TextSource, parse_source


@pytest.mark.parametrize(
    ("name", "rows", "columns"),
    [("digits", 1797, 65), ("iris", 150, 5), ("wine", 178, 14), ("breast_cancer", 569, 31)],
)
def test_table_samples_have_a_label_target(name: str, rows: int, columns: int) -> None:
    sample = load_sample(name)  # type: ignore[arg-type]
    source = parse_source(sample.data, detect_format(sample.filename), sample.filename)
    assert isinstance(source, TableSource)
    assert (len(source.table.rows), len(source.table.columns), sample.target) == (rows, columns, "label")
    assert source.table.columns[-1] == "label" and source.table.types[-1] == "int"


def test_breast_cancer_feature_names_are_clean() -> None:
    table = parse_source(load_sample("breast_cancer").data, "csv", "b.csv")
    assert isinstance(table, TableSource)
    assert table.table.columns[:3] == ["mean_radius", "mean_texture", "mean_perimeter"]


def test_digits_images_are_the_digits_scaled_to_0_255() -> None:
    sample = load_sample("digits_images")
    source = parse_source(sample.data, detect_format(sample.filename), sample.filename)
    digits = load_digits()

    assert isinstance(source, ImageSource)
    assert source.classes == [str(d) for d in range(10)]
    assert source.labels == [str(t) for t in digits.target]
    stacked = np.stack(source.images)
    assert stacked.shape == (1797, 8, 8) and stacked.dtype == np.uint8
    assert np.array_equal(stacked, np.rint(digits.images * 255 / 16).astype(np.uint8))
    assert stacked.max() == 255 and stacked.min() == 0


def test_the_corpus_is_real_english_text_of_the_promised_size() -> None:
    sample = load_sample("classics")
    source = parse_source(sample.data, detect_format(sample.filename), sample.filename)

    assert isinstance(source, TextSource)
    assert 50_000 <= len(sample.data) <= 200_000
    words = source.text.lower().split()
    assert {"the", "and", "of", "to"} <= set(words[:2000])
    assert words.count("the") > len(words) / 40  # English: 'the' is about one word in twenty
    assert len(set(source.text)) < 100  # a small character vocabulary


def test_the_digits_images_zip_has_fixed_timestamps() -> None:
    # its sha256 must not depend on when the sample was made
    with zipfile.ZipFile(io.BytesIO(load_sample("digits_images").data)) as zf:
        infos = zf.infolist()
    assert len(infos) == 1797 and {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert infos[0].filename == "0/0000.png"


def test_every_sample_is_listed() -> None:
    assert SAMPLES == ("digits", "iris", "wine", "breast_cancer", "digits_images", "classics")
