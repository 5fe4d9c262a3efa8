"""Tabular preprocessing: statistics from the training split only, scaling values, one-hot
layout, JSON round trips, and errors that name the column."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from modelhost.datasets.preprocessing import (
    MAX_CATEGORIES,
    CategoricalColumn,
    NumericColumn,
    TabularPreprocessing,
)
from modelhost.errors import InvalidInput


def _mixed() -> TabularPreprocessing:
    return TabularPreprocessing.fit(
        {
            "age": [20.0, 30.0, 40.0, 50.0],
            "colour": ["red", "blue", "red", "green"],
            "label": [0, 1, 0, 1],  # named in neither list: left out
            "size": ["S", "M", "L", "S"],
        },
        numeric=["age"],
        categorical=["colour", "size"],
    )


def test_standardize_uses_the_training_split_only():
    train, test = np.array([1.0, 2.0, 3.0, 4.0]), np.array([[100.0], [-7.0]])
    p = TabularPreprocessing.fit({"x": train}, numeric=["x"])
    col = p.columns[0]
    assert isinstance(col, NumericColumn)
    assert col.center == pytest.approx(2.5)
    assert col.scale == pytest.approx(np.std(train))  # population std of train, untouched by test rows
    out = p.transform(test)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], (test[:, 0] - 2.5) / np.std(train), rtol=1e-6)


def test_minmax_maps_the_training_range_to_unit_interval():
    p = TabularPreprocessing.fit({"x": [2, 4, 10]}, numeric=["x"], scaling="minmax")
    out = p.transform(np.array([[2.0], [10.0], [6.0], [18.0]]))
    np.testing.assert_allclose(out[:, 0], [0.0, 1.0, 0.5, 2.0])  # outside the range extrapolates


def test_scaling_none_passes_values_through_as_float32():
    p = TabularPreprocessing.fit({"x": [2.0, 4.0]}, numeric=["x"], scaling="none")
    out = p.transform(np.array([[3.25], [-1.5]]))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], [3.25, -1.5])


@pytest.mark.parametrize("scaling", ["standardize", "minmax"])
def test_constant_column_is_shifted_never_divided_by_zero(scaling):
    p = TabularPreprocessing.fit({"c": [5.0, 5.0, 5.0]}, numeric=["c"], scaling=scaling)
    assert p.columns[0].scale == 1.0
    np.testing.assert_array_equal(p.transform(np.array([[5.0], [7.0]]))[:, 0], [0.0, 2.0])


def test_integer_features_are_scaled_not_passed_through():
    p = TabularPreprocessing.fit(
        {"n": np.array([0, 10, 20], dtype=np.int64)}, numeric=["n"], scaling="minmax"
    )
    out = p.transform(np.array([[10], [20]], dtype=np.int64))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], [0.5, 1.0])


def test_csv_cells_as_strings_fit_like_numbers():
    p = TabularPreprocessing.fit({"x": ["1.5", "2.5"]}, numeric=["x"])
    assert p.columns[0].center == pytest.approx(2.0)
    assert p.transform(np.array([["2.5"]], dtype=object))[0, 0] == pytest.approx(1.0)


def test_one_hot_layout_follows_feature_and_category_order():
    p = _mixed()
    assert p.features == ["age", "colour", "size"]
    assert p.out_names == ["age", "colour=blue", "colour=green", "colour=red", "size=L", "size=M", "size=S"]
    assert p.out_features == 7
    out = p.transform(np.array([[35.0, "green", "L"], [20, "red", "S"]], dtype=object))
    expected_age = (np.array([35.0, 20.0]) - 35.0) / np.std([20.0, 30.0, 40.0, 50.0])
    np.testing.assert_allclose(out[:, 0], expected_age, rtol=1e-6)
    np.testing.assert_array_equal(out[:, 1:], [[0, 1, 0, 1, 0, 0], [0, 0, 1, 0, 0, 1]])


def test_dict_rows_give_the_same_features_as_array_rows():
    p = _mixed()
    as_dicts = p.transform(
        [{"size": "M", "age": 41, "colour": "blue"}, {"colour": "red", "size": "L", "age": 0}]
    )
    as_array = p.transform(np.array([[41, "blue", "M"], [0, "red", "L"]], dtype=object))
    np.testing.assert_array_equal(as_dicts, as_array)


def test_integer_category_codes_match_their_text():
    p = TabularPreprocessing.fit({"zone": [3, 7, 3]}, numeric=[], categorical=["zone"])
    assert p.columns[0] == CategoricalColumn(name="zone", categories=["3", "7"])
    out = p.transform(np.array([[7], ["3"], [np.int64(7)]], dtype=object))
    np.testing.assert_array_equal(out, [[0, 1], [1, 0], [0, 1]])


def test_json_round_trip_gives_identical_outputs():
    p = _mixed()
    q = TabularPreprocessing.model_validate_json(p.model_dump_json())
    rows = np.array([[33.3, "red", "M"], [-4.0, "blue", "S"]], dtype=object)
    assert q == p
    np.testing.assert_array_equal(q.transform(rows), p.transform(rows))


def test_unseen_category_names_the_column_and_value():
    with pytest.raises(InvalidInput, match=r"column 'colour': unknown category 'purple' \(row 1\).*'blue'"):
        _mixed().transform(np.array([[1, "red", "S"], [2, "purple", "S"]], dtype=object))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            np.array([[1, "red", "S"], ["old", "red", "S"]], dtype=object),
            r"column 'age': 'old' is not a number \(row 1\)",
        ),
        (np.array([[np.nan, "red", "S"]], dtype=object), r"column 'age': NaN or infinity \(row 0\)"),
        (np.array([[True, "red", "S"]], dtype=object), "column 'age': true/false is not a number"),
        (np.array([[1, 2.5, "S"]], dtype=object), r"column 'colour': expected a category \(text\), got 2.5"),
        (
            np.array([[1, "red"]], dtype=object),
            r"expected shape \(N, 3\) for columns \['age', 'colour', 'size'\]",
        ),
        ([{"age": 1, "colour": "red"}], "rows\\[0\\]: missing column 'size'"),
        ([{"age": 1, "colour": "red", "size": "S", "zip": 1}], "rows\\[0\\]: unknown column 'zip'"),
    ],
)
def test_bad_rows_are_refused_naming_the_problem(rows, message):
    with pytest.raises(InvalidInput, match=message):
        _mixed().transform(rows)


def test_non_finite_float_array_names_the_column():
    p = TabularPreprocessing.fit({"a": [1.0, 2.0], "b": [3.0, 5.0]}, numeric=["a", "b"])
    with pytest.raises(InvalidInput, match=r"column 'b': NaN or infinity \(row 1\)"):
        p.transform(np.array([[1.0, 2.0], [1.0, np.inf]]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"numeric": ["x"], "categorical": ["x"]}, "categorical: 'x' is also listed as numeric"),
        ({"numeric": ["nope"]}, "numeric: no column 'nope'"),
        ({"numeric": []}, "no feature columns"),
    ],
)
def test_bad_fit_arguments_name_the_argument(kwargs, message):
    with pytest.raises(InvalidInput, match=message):
        TabularPreprocessing.fit({"x": [1.0, 2.0]}, **kwargs)


def test_fit_refuses_empty_ragged_and_id_like_columns():
    with pytest.raises(InvalidInput, match="no training rows"):
        TabularPreprocessing.fit({"x": []}, numeric=["x"])
    with pytest.raises(InvalidInput, match="different lengths"):
        TabularPreprocessing.fit({"x": [1, 2], "y": [1]}, numeric=["x", "y"])
    with pytest.raises(InvalidInput, match=f"'id' has {MAX_CATEGORIES + 1} distinct values"):
        TabularPreprocessing.fit({"id": [f"u{i}" for i in range(MAX_CATEGORIES + 1)]}, [], ["id"])
    with pytest.raises(InvalidInput, match=r"column 'x': '' is not a number \(row 1\)"):
        TabularPreprocessing.fit({"x": ["1", ""]}, numeric=["x"])  # a CSV's missing value


def test_saved_state_is_validated_naming_the_field():
    with pytest.raises(ValidationError, match="scale"):
        NumericColumn(name="x", scale=0.0)
    with pytest.raises(ValidationError, match="'c' appears twice"):
        TabularPreprocessing(columns=[NumericColumn(name="c"), CategoricalColumn(name="c", categories=["a"])])
    with pytest.raises(ValidationError, match="repeat"):
        CategoricalColumn(name="c", categories=["a", "a"])


def test_oip_bytes_cells_work_for_both_column_kinds():
    """An OIP v2 BYTES tensor: every cell arrives as UTF-8 bytes, numbers included."""
    p = _mixed()
    as_bytes = p.transform(np.array([[b"35", b"green", b"L"]], dtype=object))
    np.testing.assert_array_equal(as_bytes, p.transform(np.array([[35.0, "green", "L"]], dtype=object)))
    with pytest.raises(InvalidInput, match=r"column 'size': not valid UTF-8 \(row 0\)"):
        p.transform(np.array([[b"35", b"red", b"\xff"]], dtype=object))


def test_numeric_sequences_keep_their_leading_axes():
    """(N, T, F) sequences: fitted over every step, scaled feature by feature, shape kept."""
    rng = np.random.default_rng(0)
    seqs = rng.normal(3.0, 2.0, (5, 7, 2))
    flat = seqs.reshape(-1, 2)
    p = TabularPreprocessing.fit({"a": flat[:, 0], "b": flat[:, 1]}, numeric=["a", "b"])
    out = p.transform(seqs)
    assert out.shape == (5, 7, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out, p.transform(flat).reshape(5, 7, 2))
    np.testing.assert_allclose(out.reshape(-1, 2).mean(axis=0), 0.0, atol=1e-6)
    with pytest.raises(InvalidInput, match=r"expected shape \(N, 2\)"):
        p.transform(seqs[..., :1])
