"""The discriminated union a manifest stores, ``preprocess`` (serving's one call), and manifests
written before this module (``{"kind": "standardize", "mean", "std"}``)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from modelhost.datasets.images import ImagePreprocessing
from modelhost.datasets.preprocessing import NoPreprocessing, Preprocessing, TabularPreprocessing, preprocess
from modelhost.datasets.tokenizers import TextPreprocessing
from modelhost.errors import InvalidInput


class _Manifest(BaseModel):
    """The shape of a manifest's field: preprocessing nested in a larger JSON document."""

    preprocessing: Preprocessing = NoPreprocessing()


def _fitted() -> list[tuple[Preprocessing, object]]:
    rng = np.random.default_rng(0)
    tab = TabularPreprocessing.fit({"a": rng.normal(size=50), "c": list("xyz" * 16 + "xy")}, ["a"], ["c"])
    img = ImagePreprocessing.fit(rng.integers(0, 256, (10, 8, 8), dtype=np.uint8), 12, 12, 1)
    txt = TextPreprocessing.fit(["hello wörld", "中文 🙂"], "char", max_length=6)
    return [
        (tab, np.array([[0.5, "z"], [-1.0, "x"]], dtype=object)),
        (img, rng.integers(0, 256, (3, 9, 7), dtype=np.uint8)),
        (txt, np.array(["hello", "🙂 wö"], dtype=object)),
        (NoPreprocessing(features=["f0"]), np.array([[1.5], [2.0]], dtype=np.float64)),
    ]


@pytest.mark.parametrize("index", range(4), ids=["tabular", "image", "text", "none"])
def test_every_kind_round_trips_through_manifest_json(index):
    p, batch = _fitted()[index]
    loaded = _Manifest.model_validate_json(_Manifest(preprocessing=p).model_dump_json()).preprocessing
    assert type(loaded) is type(p) and loaded == p
    np.testing.assert_array_equal(preprocess(loaded, batch), p.transform(batch))


def test_preprocess_gives_float32_features_and_int64_token_ids():
    dtypes = [preprocess(p, batch).dtype for p, batch in _fitted()]
    assert dtypes == [np.float32, np.float32, np.int64, np.float32]


def test_no_preprocessing_keeps_integers_exactly():
    ids = np.array([[1, 2**40]], dtype=np.int64)
    assert preprocess(NoPreprocessing(), ids) is ids
    with pytest.raises(InvalidInput, match="NaN or infinity"):
        preprocess(NoPreprocessing(), np.array([[np.nan]]))


def test_legacy_standardize_manifest_serves_the_same_values():
    legacy = {"kind": "standardize", "features": ["f0", "f1"], "mean": [1.0, -2.0], "std": [2.0, 0.5]}
    p = TypeAdapter(Preprocessing).validate_python(legacy)
    assert isinstance(p, TabularPreprocessing) and p.features == ["f0", "f1"]
    x = np.array([[3.0, -1.0], [1.0, -2.0]], dtype=np.float32)
    old = (x - np.array(legacy["mean"], np.float32)) / np.array(
        legacy["std"], np.float32
    )  # the old transform
    np.testing.assert_allclose(preprocess(p, x), old, rtol=1e-6)


def test_legacy_none_manifest_keeps_its_features():
    p = _Manifest.model_validate({"preprocessing": {"kind": "none", "features": ["a", "b"]}}).preprocessing
    assert p == NoPreprocessing(features=["a", "b"])
    unfitted = _Manifest.model_validate({"preprocessing": {"kind": "standardize", "features": ["a"]}})
    assert unfitted.preprocessing == NoPreprocessing(features=["a"])


def test_unknown_kind_is_refused_naming_the_field():
    with pytest.raises(ValidationError, match=r"preprocessing[\s\S]*'tabular', 'image', 'text', 'none'"):
        _Manifest.model_validate({"preprocessing": {"kind": "pca"}})
    with pytest.raises(ValidationError, match=r"preprocessing\.tabular\.columns"):
        _Manifest.model_validate({"preprocessing": {"kind": "tabular", "columns": []}})
