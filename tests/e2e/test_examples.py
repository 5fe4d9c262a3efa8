"""Every example in examples/ runs as its README says — its data made by its own script (or a
built-in sample), uploaded, its spec submitted — at a small size, through the real server."""

from __future__ import annotations

import importlib.util
import io
import math
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from tests.e2e.test_runs_lifecycle import wait_for

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def make_data(example: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"example_{example}", EXAMPLES / example / "make_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make


def npz(arrays: dict[str, np.ndarray]) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def upload(
    http: httpx.Client, name: str, filename: str, data: bytes | str, target: str | None = None
) -> None:
    form = {"name": name, **({"target": target} if target else {})}
    r = http.post("/api/v1/datasets", data=form, files={"file": (filename, data)})
    assert r.status_code == 201, r.text


def sample(http: httpx.Client, name: str) -> None:
    r = http.post(f"/api/v1/datasets/samples/{name}", json={})
    assert r.status_code == 201, r.text


# example -> (how its data arrives, spec overrides that make it small, the metric and its bar)
CASES: dict[str, tuple[Any, dict[str, Any], str, float]] = {
    "mnist_cnn": (
        lambda http: sample(http, "digits_images"),
        {
            "epochs": 3,
            "model": {"architecture": "cnn", "channels": [8, 16], "dense": 32},
            "schedule": {"name": "constant"},  # the spec's warmup outlasts a 3-epoch run
            "checkpoint_every": None,
        },
        "val_accuracy",
        0.7,
    ),
    "lstm_sequences": (
        lambda http: upload(http, "waves", "waves.npz", npz(make_data("lstm_sequences")(n=600))),
        {"epochs": 6},
        "val_accuracy",
        0.8,
    ),
    "regression_curve": (
        lambda http: upload(http, "curve", "curve.csv", make_data("regression_curve")(n=300), target="y"),
        {"epochs": 80},
        "val_r2",
        0.8,
    ),
    "binary_classifier": (
        lambda http: upload(http, "binary100", "binary.npz", npz(make_data("binary_classifier")(n=1200))),
        {"epochs": 6},
        "val_accuracy",
        0.75,
    ),
    "text_classifier": (
        lambda http: upload(
            http, "reviews", "reviews.jsonl", make_data("text_classifier")(n=800), target="label"
        ),
        {"epochs": 4},
        "val_accuracy",
        0.85,
    ),
    "char_gpt": (
        lambda http: sample(http, "classics"),
        {
            "epochs": 2,
            "model": {"architecture": "gpt", "block_size": 64, "n_layer": 1, "n_head": 2, "n_embd": 48},
            "schedule": {"name": "constant"},  # the spec's warmup outlasts a 2-epoch run
            "optimizer": {"name": "adamw", "lr": 0.003},
        },
        "val_loss",
        math.inf,  # checked against the vocabulary below
    ),
}


@pytest.mark.parametrize("example", list(CASES))
def test_example_trains_as_documented(http: httpx.Client, example: str) -> None:
    make, overrides, metric, bar = CASES[example]
    make(http)
    spec = {**yaml.safe_load((EXAMPLES / example / "spec.yaml").read_text()), **overrides}
    r = http.post("/api/v1/runs", json=spec)
    assert r.status_code == 201, r.text
    run = wait_for(http, r.json()["id"], lambda r: r["status"] not in ("queued", "running"), timeout=300)
    assert run["status"] == "succeeded", run["error"]
    manifest = http.get(f"/api/v1/models/{spec['register_as']}/versions/1").json()["manifest"]
    value = manifest["metrics"][metric]
    if example == "char_gpt":
        assert value < 0.8 * math.log(manifest["config"]["vocab_size"])  # well below guessing
        assert manifest["signature"]["inputs"][0]["datatype"] == "INT64"
    else:
        assert value > bar, manifest["metrics"]
