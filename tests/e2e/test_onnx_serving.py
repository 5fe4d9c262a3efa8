"""The onnx runtime against the real server: a trained version served by torch and by onnx
answers the same, and an external ONNX file imported with the CLI serves its own tensors."""

from __future__ import annotations

import pickle
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.e2e.conftest import train_digits
from tests.e2e.test_cli_flow import cli
from tests.servers import Server
from tests.unit.test_onnx_runtime import tiny_graph

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(http: httpx.Client, digits_split) -> None:
    train_digits(http, digits_split[0])


def _deploy(http: httpx.Client, name: str, model: str, runtime: str) -> httpx.Response:
    return http.put(f"/api/v1/deployments/{name}", json={"model": model, "version": 1, "runtime": runtime})


def test_torch_and_onnx_deployments_answer_the_same(http: httpx.Client, trained: None, digits_split) -> None:
    _, x_test, y_test = digits_split
    for runtime in ("torch", "onnx"):
        r = _deploy(http, f"digits-{runtime}", "digits-mlp", runtime)
        assert r.status_code == 201, r.text
        assert r.json()["runtime"] == runtime
    by_runtime = {}
    for runtime in ("torch", "onnx"):
        r = http.post(f"/v1/models/digits-{runtime}:predict", json={"instances": x_test.tolist()})
        assert r.status_code == 200, r.text
        body = {
            "inputs": [
                {"name": "input", "shape": [300, 64], "datatype": "FP32", "data": x_test.ravel().tolist()}
            ]
        }
        v2 = http.post(f"/v2/models/digits-{runtime}/infer", json=body)
        assert v2.status_code == 200, v2.text
        by_runtime[runtime] = (r.json()["predictions"], {o["name"]: o for o in v2.json()["outputs"]})
    (torch_labels, torch_out), (onnx_labels, onnx_out) = by_runtime["torch"], by_runtime["onnx"]
    assert onnx_labels == torch_labels and (np.array(onnx_labels) == y_test).mean() >= 0.9
    assert onnx_out["label"] == torch_out["label"]
    assert onnx_out["probabilities"]["shape"] == torch_out["probabilities"]["shape"] == [300, 10]
    np.testing.assert_allclose(
        onnx_out["probabilities"]["data"], torch_out["probabilities"]["data"], atol=1e-5
    )


def test_imported_onnx_file_is_served_by_its_own_names(
    server: Server, http: httpx.Client, tmp_path: Path
) -> None:
    (tmp_path / "tiny.onnx").write_bytes(tiny_graph())
    imported = cli(server, "import", str(tmp_path / "tiny.onnx"), "--name", "tiny")
    assert '"architecture": "onnx"' in imported.stdout and '"task": "custom"' in imported.stdout
    version = http.get("/api/v1/models/tiny/versions/1").json()
    assert set(version["files"]) == {"modelhost.json", "model.onnx"}
    assert [i["name"] for i in version["manifest"]["signature"]["inputs"]] == ["ids", "x"]

    refused = _deploy(http, "tiny-torch", "tiny", "torch")
    assert refused.status_code == 422 and refused.json()["error"]["type"] == "load_failed"
    assert "deploy it with runtime 'onnx'" in refused.json()["error"]["message"]

    r = _deploy(http, "tiny", "tiny", "onnx")
    assert r.status_code == 201, r.text
    body = {
        "inputs": [
            {"name": "ids", "shape": [2, 3], "datatype": "INT64", "data": [1, 2, 3, 0, 0, 1]},
            {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1.0, 0.5, 2.0, -1.0]},
        ]
    }
    r = http.post("/v2/models/tiny/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == [
        {"name": "scaled", "datatype": "FP32", "shape": [2, 2], "data": [6.0, 3.0, 2.0, -1.0]},
        {"name": "doubled", "datatype": "INT64", "shape": [2, 3], "data": [2, 4, 6, 0, 0, 2]},
    ]


def test_import_refuses_what_it_cannot_serve(server: Server, http: httpx.Client, tmp_path: Path) -> None:
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    gguf = cli(server, "import", str(tmp_path / "model.gguf"), "--name", "llm", ok=False)
    assert gguf.returncode == 1 and "'model.gguf' is not a readable GGUF file" in gguf.stderr
    (tmp_path / "hf").mkdir()
    folder = cli(server, "import", str(tmp_path / "hf"), "--name", "llm", ok=False)
    assert folder.returncode == 1 and "Hugging Face folders" in folder.stderr
    r = http.post(
        "/api/v1/models/evil/import",
        files={"file": ("evil.onnx", pickle.dumps([1, 2]), "application/octet-stream")},
    )
    assert r.status_code == 422 and r.json()["error"]["type"] == "unsafe_content"
    r = http.post(
        "/api/v1/models/junk/import",
        files={"file": ("junk.onnx", b"not a model", "application/octet-stream")},
    )
    assert r.status_code == 400 and "'junk.onnx' is not a valid ONNX model" in r.json()["error"]["message"]
    assert http.get("/api/v1/models/evil").status_code == 404
    viewer = http.post("/api/v1/keys", json={"name": "onnx-viewer", "role": "viewer"}).json()["key"]
    r = http.post(
        "/api/v1/models/tiny-viewer/import",
        files={"file": ("tiny.onnx", tiny_graph(), "application/octet-stream")},
        headers={"Authorization": f"Bearer {viewer}"},
    )
    assert r.status_code == 403 and r.json()["error"]["type"] == "forbidden"
