"""Splits: by ratio with a seed, or given as datasets of their own — whose rows are used
whole and never for fitting the preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

from modelhost.datasets.formats import Table, parse_csv
from modelhost.datasets.samples import sample_csv
from modelhost.datasets.sources import ArraySource, ImageSource, TableSource, TextSource
from modelhost.errors import InvalidInput
from modelhost.training.data import prepare
from modelhost.training.spec import parse_spec


@pytest.fixture(scope="module")
def iris() -> Table:
    return parse_csv(sample_csv("iris")[0])


def part(t: Table, rows: slice) -> TableSource:
    return TableSource(Table(t.columns, t.types, t.rows[rows]))


def test_ratio_split_is_seeded_and_disjoint(iris) -> None:
    spec = parse_spec(
        {"dataset": "d", "target": "label", "split": {"validation": 0.2, "test": 0.1, "seed": 5}}
    )
    a, b = prepare(TableSource(iris), spec), prepare(TableSource(iris), spec)
    assert (len(a.x_train), len(a.x_val), len(a.x_test)) == (105, 30, 15)
    assert np.array_equal(a.x_val, b.x_val)
    rows = {tuple(r) for r in np.concatenate([a.x_train, a.x_val, a.x_test]).round(5)}
    assert len(rows) >= 147  # iris repeats a few flowers; nothing is in two splits by construction


def test_given_validation_and_test_datasets_are_used_whole(iris) -> None:
    spec = parse_spec(
        {
            "dataset": "train",
            "target": "label",
            "split": {"validation_dataset": "val", "test_dataset": "test", "validation": 0.5},
        }
    )
    data = prepare(part(iris, slice(0, 100)), spec, part(iris, slice(100, 130)), part(iris, slice(130, 150)))
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (100, 30, 20)  # the ratio is unused
    assert list(data.y_val) == [int(r[-1]) for r in iris.rows[100:130]]  # in order, all of them
    assert np.allclose(data.x_train.mean(axis=0), 0, atol=1e-5)  # fitted on the training rows only


def test_given_splits_work_for_arrays_images_and_text() -> None:
    rng = np.random.default_rng(0)

    def arrays(n):
        return ArraySource({"x": rng.normal(size=(n, 3)).astype(np.float32), "y": rng.integers(0, 2, n)})

    spec = parse_spec({"dataset": "d", "split": {"validation_dataset": "v"}})
    data = prepare(arrays(80), spec, arrays(20))
    assert (len(data.x_train), len(data.x_val)) == (80, 20)

    def images(n):
        ims = [rng.integers(0, 255, (8, 8), dtype=np.uint8) for _ in range(n)]
        return ImageSource(ims, [str(i % 2) for i in range(n)], ["0", "1"])

    cnn = parse_spec({"dataset": "d", "model": {"architecture": "cnn"}, "split": {"test_dataset": "t"}})
    data = prepare(images(40), cnn, None, images(12))
    assert len(data.x_test) == 12 and len(data.x_train) + len(data.x_val) == 40

    gpt = parse_spec(
        {
            "dataset": "d",
            "task": "language_model",
            "model": {"architecture": "gpt", "block_size": 8},
            "split": {"validation_dataset": "v"},
        }
    )
    data = prepare(TextSource("abcdefgh" * 20), gpt, TextSource("hgfedcba" * 5))
    assert len(data.x_train) == (160 - 1) // 8 and len(data.x_val) == (40 - 1) // 8


def test_a_given_split_of_another_kind_or_shape_is_refused(iris) -> None:
    spec = parse_spec({"dataset": "d", "target": "label", "split": {"validation_dataset": "v"}})
    with pytest.raises(InvalidInput, match=r"split\.validation_dataset: it is not the same kind"):
        prepare(TableSource(iris), spec, TextSource("text"))
    other = Table(["a", "label"], ["float", "int"], [["1.0", "0"]])
    with pytest.raises(InvalidInput, match="columns"):
        prepare(TableSource(iris), spec, TableSource(other))
