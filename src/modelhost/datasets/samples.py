"""Built-in sample datasets from scikit-learn's bundled files: no network needed."""

from __future__ import annotations

from typing import Literal

import numpy as np

from modelhost.datasets.formats import to_csv

SampleName = Literal["digits", "iris", "wine"]
SAMPLES: tuple[SampleName, ...] = ("digits", "iris", "wine")


def sample_csv(name: SampleName) -> tuple[bytes, str]:
    """The sample as CSV bytes with a ``label`` column, and the name of that target column."""
    from sklearn import datasets as skd

    loader = {"digits": skd.load_digits, "iris": skd.load_iris, "wine": skd.load_wine}[name]
    bunch = loader()
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
