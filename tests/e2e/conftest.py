from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits

from modelhost.datasets.formats import to_csv
from tests.servers import ADMIN_KEY, Server, start_server


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    """An admin client of the module's server."""
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60) as c:
        yield c


def train_digits(http: httpx.Client, csv: bytes, **overrides: object) -> dict:
    """Upload the digits CSV as ``digits-upload`` and train DIGITS_SPEC (with overrides) on it;
    returns the finished run, which must have succeeded."""
    r = http.post(
        "/api/v1/datasets", data={"name": "digits-upload"}, files={"file": ("digits.csv", csv, "text/csv")}
    )
    assert r.status_code == 201, r.text
    assert r.json()["num_rows"] == 1497 and len(r.json()["columns"]) == 65
    r = http.post("/api/v1/runs", json={**DIGITS_SPEC, **overrides})
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 240
    while (run := http.get(f"/api/v1/runs/{r.json()['id']}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"run still {run['status']}"
        time.sleep(0.2)
    assert run["status"] == "succeeded", run["error"]
    return run


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
