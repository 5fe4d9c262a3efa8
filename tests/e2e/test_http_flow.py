"""The whole lifecycle over HTTP against the real server: upload, train, deploy, predict."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.e2e.conftest import DIGITS_SPEC, train_digits
from tests.servers import ADMIN_KEY, Server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployed(http: httpx.Client, digits_split) -> dict:
    run = train_digits(http, digits_split[0])
    r = http.put("/api/v1/deployments/digits-e2e", json={"model": "digits-mlp"})
    assert r.status_code == 201, r.text  # created
    return {"run": run, "deployment": r.json()}


def test_run_records_status_metrics_and_log(http: httpx.Client, deployed: dict) -> None:
    run = deployed["run"]
    assert run["step"] == run["total_steps"] == 15 * -(-1198 // 64)  # 1,497 rows, 20% held for validation
    metrics = http.get(f"/api/v1/runs/{run['id']}/metrics", params={"key": "val_accuracy"}).json()
    assert [m["epoch"] for m in metrics] == list(range(1, 16))
    assert metrics[-1]["value"] > 0.9
    lines = [line["line"] for line in http.get(f"/api/v1/runs/{run['id']}/logs").json()]
    assert lines[0].startswith("worker ") and lines[-1] == "registered 'digits-mlp' version 1"


def test_registered_version_has_signature_and_lineage(http: httpx.Client, deployed: dict) -> None:
    v = http.get("/api/v1/models/digits-mlp/versions/1").json()
    assert v["manifest"]["signature"]["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert v["manifest"]["classes"] == list(range(10))
    assert v["manifest"]["lineage"]["run_id"] == deployed["run"]["id"]
    assert set(v["files"]) == {"modelhost.json", "weights.safetensors"}
    assert deployed["deployment"]["state"] == "ready" and deployed["deployment"]["version"] == 1


def test_predict_is_accurate_on_held_out_digits(http: httpx.Client, deployed: dict, digits_split) -> None:
    _, x_test, y_test = digits_split
    r = http.post("/v1/models/digits-e2e:predict", json={"instances": x_test.tolist()})
    assert r.status_code == 200, r.text
    predictions = np.array(r.json()["predictions"])
    assert predictions.shape == (300,)
    assert (predictions == y_test).mean() >= 0.9


def test_oip_v2_infer_matches_predict(http: httpx.Client, deployed: dict, digits_split) -> None:
    _, x_test, y_test = digits_split
    body = {
        "id": "req-1",
        "inputs": [
            {"name": "input", "shape": [300, 64], "datatype": "FP32", "data": x_test.reshape(-1).tolist()}
        ],
    }
    r = http.post("/v2/models/digits-e2e/infer", json=body)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert r.json()["id"] == "req-1" and r.json()["model_version"] == "1"
    assert out["label"]["datatype"] == "INT64" and out["label"]["shape"] == [300]
    assert (np.array(out["label"]["data"]) == y_test).mean() >= 0.9
    probs = np.array(out["probabilities"]["data"]).reshape(out["probabilities"]["shape"])
    assert probs.shape == (300, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert (probs.argmax(axis=1) == np.array(out["label"]["data"])).all()
    versioned = http.post("/v2/models/digits-e2e/versions/1/infer", json=body).json()
    assert versioned["outputs"] == r.json()["outputs"]


def test_oip_v2_health_and_metadata(http: httpx.Client, server: Server, deployed: dict) -> None:
    assert httpx.get(server.url + "/v2/health/live").json() == {"live": True}
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200
    assert http.get("/v2/models/digits-e2e/ready").json() == {"name": "digits-e2e", "ready": True}
    meta = http.get("/v2/models/digits-e2e").json()
    assert meta["versions"] == ["1"]
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
    assert http.get("/v2/models/digits-e2e/versions/2").status_code == 404


def test_tritonclient_works_unmodified(server: Server, deployed: dict, digits_split) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    _, x_test, y_test = digits_split
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert client.is_server_live() and client.is_model_ready("digits-e2e", headers=headers)
    inp = triton.InferInput("input", list(x_test[:50].shape), "FP32")
    inp.set_data_from_numpy(x_test[:50], binary_data=False)
    outputs = [triton.InferRequestedOutput("label", binary_data=False)]
    result = client.infer("digits-e2e", [inp], outputs=outputs, headers=headers)
    labels = result.as_numpy("label")
    assert labels.shape == (50,) and (labels == y_test[:50]).mean() >= 0.9
    binary_in = triton.InferInput("input", list(x_test[:50].shape), "FP32")
    binary_in.set_data_from_numpy(x_test[:50], binary_data=True)
    binary = client.infer("digits-e2e", [binary_in], headers=headers)  # binary in and out
    assert (binary.as_numpy("label") == labels).all()
    probs = binary.as_numpy("probabilities")
    assert probs.dtype == np.float32 and probs.shape == (50, 10)
    assert (probs.argmax(axis=1) == labels).all()
    bad = triton.InferInput("input", [1, 63], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 63), np.float32))
    with pytest.raises(
        InferenceServerException, match=r"shape \[1, 63\] does not match the expected \[-1, 64\]"
    ):
        client.infer("digits-e2e", [bad], headers=headers)
    client.close()


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v1/models/digits-e2e:predict", {"instances": [[1.0] * 63]}, 400, "expected a list of 64 numbers"),
        ("/v1/models/digits-e2e:predict", {"instances": [["a"] * 64]}, 400, "'a' is not a number"),
        ("/v1/models/digits-e2e:predict", {"instances": []}, 400, "non-empty list"),
        ("/v1/models/digits-e2e:predict", {"rows": []}, 400, 'a JSON object with an "instances" list'),
        ("/v1/models/nope:predict", {"instances": [[0] * 64]}, 404, "deployment 'nope' not found"),
        (
            "/v2/models/digits-e2e/infer",
            {"inputs": [{"name": "input", "shape": [1, 63], "datatype": "FP32", "data": [0] * 63}]},
            400,
            "shape [1, 63] does not match the expected [-1, 64]",
        ),
        (
            "/v2/models/digits-e2e/infer",
            {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0] * 64}]},
            400,
            "unknown input 'pixels'",
        ),
        (
            "/v2/models/digits-e2e/infer",
            {"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": [0] * 64}]},
            400,
            "needs 128 values, got 64",
        ),
    ],
)
def test_bad_inference_input_gets_a_clear_4xx(http, deployed, path, body, status, fragment) -> None:
    r = http.post(path, json=body)
    assert r.status_code == status
    assert fragment in r.json()["error"]


def test_malformed_json_is_named(http: httpx.Client, deployed: dict) -> None:
    r = http.post("/api/v1/runs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "malformed JSON" in r.json()["error"]["message"]
    r = http.post("/v2/models/digits-e2e/infer", content=b"[1,", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]


def test_bad_spec_field_is_named(http: httpx.Client, deployed: dict) -> None:
    r = http.post("/api/v1/runs", json={**DIGITS_SPEC, "epochs": 0, "optimiser": {}})
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    assert "epochs: Input should be greater than or equal to 1" in msg and "optimiser: unknown field" in msg
    r = http.post("/api/v1/runs", json={**DIGITS_SPEC, "dataset": "missing"})
    assert r.status_code == 404 and r.json()["error"] == {
        "type": "not_found",
        "message": "dataset 'missing' not found",
    }


def test_a_version_that_fails_to_load_is_refused_and_the_old_one_keeps_serving(
    http: httpx.Client, server: Server, deployed: dict, digits_split
) -> None:
    from safetensors.torch import save

    from modelhost.artifacts import open_artifacts
    from modelhost.db import Database
    from modelhost.nn import build_model
    from modelhost.registry.manifest import WEIGHTS_FILE, Manifest
    from modelhost.registry.service import get_version, register_version

    db = Database(f"sqlite:///{server.home / 'modelhost.db'}")
    store = open_artifacts((server.home / "artifacts").as_uri())
    with db.session() as s:  # version 2 claims a wider layer than its weights hold
        v1 = get_version(s, "digits-mlp", 1).manifest
        bad = Manifest.model_validate({**v1.model_dump(), "config": {**v1.config, "hidden_sizes": [32]}})
        weights = save(build_model("mlp", {**v1.config, "hidden_sizes": [64]}).state_dict())
        assert register_version(s, store, "digits-mlp", bad, {WEIGHTS_FILE: weights}).number == 2
    db.dispose()
    r = http.put("/api/v1/deployments/digits-e2e", json={"model": "digits-mlp", "version": 2})
    assert r.status_code == 422
    assert r.json()["error"]["type"] == "load_failed" and "size mismatch" in r.json()["error"]["message"]
    assert http.get("/api/v1/deployments/digits-e2e").json()["version"] == 1
    _, x_test, y_test = digits_split
    predictions = http.post("/v1/models/digits-e2e:predict", json={"instances": x_test[:50].tolist()}).json()
    assert (np.array(predictions["predictions"]) == y_test[:50]).mean() >= 0.9


def test_oversized_body_is_refused_with_413(http: httpx.Client, deployed: dict) -> None:
    big = b" " * (64 * 1024 * 1024 + 1)  # one byte over the default limit
    r = http.post("/v1/models/digits-e2e:predict", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"] == f"request body of {len(big)} bytes exceeds the {64 * 1024 * 1024} byte limit"
    chunks = (big[i : i + (1 << 20)] for i in range(0, len(big), 1 << 20))  # chunked: no Content-Length
    r = http.post(
        "/v1/models/digits-e2e:predict", content=chunks, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413
    assert r.json()["error"] == f"request body exceeds the {64 * 1024 * 1024} byte limit"
