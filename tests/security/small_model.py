"""A small deployment for the attacks that need an inference route that answers: the tiny ONNX
graph of the unit tests (``ids`` INT64 [N, 3] and ``x`` FP32 [N, 2] in), imported and deployed."""

from __future__ import annotations

from pathlib import Path

import httpx

from modelhost.client import Client
from tests.servers import ADMIN_KEY
from tests.unit.test_onnx_runtime import tiny_graph

TINY = "tiny"


def deploy_tiny(url: str, admin: httpx.Client, folder: Path) -> str:
    """Import the tiny graph as model ``tiny`` and deploy it under the same name."""
    (folder / "tiny.onnx").write_bytes(tiny_graph())
    with Client(url, ADMIN_KEY) as c:
        c.import_model(folder / "tiny.onnx", TINY)
    r = admin.put(f"/api/v1/deployments/{TINY}", json={"model": TINY, "runtime": "onnx"})
    assert r.status_code == 201, r.text
    return TINY


def infer_body(rows: int = 1) -> dict[str, object]:
    """A valid OIP v2 request for the tiny graph with ``rows`` rows."""
    return {
        "inputs": [
            {"name": "ids", "shape": [rows, 3], "datatype": "INT64", "data": [1, 2, 3] * rows},
            {"name": "x", "shape": [rows, 2], "datatype": "FP32", "data": [1.0, 0.5] * rows},
        ]
    }
