"""Every example in examples/ runs as its README says — its data made by its own script (or a
built-in sample), uploaded, its spec submitted — at a small size, through the real server."""

from __future__ import annotations

import importlib.util
import io
import json
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


def test_trained_examples_serve_raw_pixels_sequences_and_text(http: httpx.Client) -> None:
    """Clients send what the data was — pixels, sequences, text — and the version's saved
    preprocessing (resize and normalise, scale, tokenise) runs inside the deployment."""
    from sklearn.datasets import load_digits

    for name, model in (("cnn", "digits-cnn"), ("lstm", "waves-lstm"), ("reviews", "reviews-transformer")):
        r = http.put(f"/api/v1/deployments/{name}", json={"model": model})
        assert r.status_code == 201, r.text
    digits = load_digits()
    pixels = (digits.images[:60] * 255 / 16).round().astype(int)
    r = http.post("/v1/models/cnn:predict", json={"instances": pixels.tolist()})
    assert r.status_code == 200, r.text
    assert (np.array(r.json()["predictions"]) == digits.target[:60]).mean() > 0.6
    big = np.kron(pixels[:5], np.ones((2, 2), dtype=int))  # 16x16: resized to what the model saw
    assert http.post("/v1/models/cnn:predict", json={"instances": big.tolist()}).status_code == 200
    body = {
        "inputs": [
            {"name": "image", "shape": [5, 8, 8], "datatype": "FP32", "data": pixels[:5].ravel().tolist()}
        ]
    }
    r = http.post("/v2/models/cnn/infer", json=body)
    assert r.status_code == 200, r.text

    waves = make_data("lstm_sequences")(n=40, seed=9)
    r = http.post("/v1/models/lstm:predict", json={"instances": waves["x"].tolist()})
    assert r.status_code == 200, r.text
    assert (np.array(r.json()["predictions"]) == waves["y"]).mean() > 0.75

    reviews = [json.loads(line) for line in make_data("text_classifier")(n=40, seed=9).splitlines()]
    r = http.post("/v1/models/reviews:predict", json={"instances": [x["text"] for x in reviews]})
    assert r.status_code == 200, r.text
    assert (np.array(r.json()["predictions"]) == np.array([x["label"] for x in reviews])).mean() > 0.85
    bad = http.post("/v1/models/reviews:predict", json={"instances": [3]})
    assert bad.status_code == 400 and "expected a string" in bad.text
    bad = http.post("/v1/models/lstm:predict", json={"instances": [[1, 2], [3]]})
    assert bad.status_code == 400
