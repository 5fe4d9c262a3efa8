from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.datasets import load_digits

from modelhost.datasets.formats import to_csv
from tests.servers import Server, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("e2e") / "home")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def digits_split() -> tuple[bytes, np.ndarray, np.ndarray]:
    """Training CSV of 1,497 digits, and 300 held-out images with their labels."""
    d = load_digits()
    order = np.random.default_rng(7).permutation(len(d.data))
    train, test = order[300:], order[:300]
    cols = [f"px{i}" for i in range(64)] + ["digit"]
    rows = [[*map(int, x), int(y)] for x, y in zip(d.data[train], d.target[train], strict=True)]
    return to_csv(cols, rows), d.data[test].astype(np.float32), d.target[test]


DIGITS_SPEC = {
    "dataset": "digits-upload",
    "target": "digit",
    "model": {"architecture": "mlp", "hidden_sizes": [64]},
    "optimizer": {"name": "adam", "lr": 0.003},
    "epochs": 15,
    "batch_size": 64,
    "seed": 1,
    "register_as": "digits-mlp",
}
