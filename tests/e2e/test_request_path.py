"""The request path under pressure, over real HTTP: a full queue answers 503 with
Retry-After, a late answer 504, a client that leaves has its request dropped before it is
computed, and /metrics counts all of it."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import train_digits
from tests.servers import ADMIN_KEY, Server

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module", autouse=True)
def trained(http: httpx.Client, digits_split) -> None:
    train_digits(http, digits_split[0], epochs=2)


def deploy(http: httpx.Client, name: str, **batching) -> dict:
    r = http.put(f"/api/v1/deployments/{name}", json={"model": "digits-mlp", "batching": batching})
    assert r.status_code in (200, 201), r.text
    return r.json()


def metric(http: httpx.Client, name: str, deployment: str, **labels: str) -> float:
    """One sample of /metrics, read with Prometheus' own parser (0 when absent)."""
    wanted = {"deployment": deployment, "version": "1", **labels}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels == wanted:
                return sample.value
    return 0.0


def test_full_queue_answers_503_with_retry_after(http: httpx.Client, server: Server) -> None:
    deploy(http, "tiny-queue", max_queue=1, max_batch_size=65536)
    body = {"instances": np.ones((10_000, 64)).tolist()}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as c:
            return await asyncio.gather(
                *(c.post("/v1/models/tiny-queue:predict", json=body) for _ in range(12))
            )

    answers = asyncio.run(burst())
    codes = sorted(r.status_code for r in answers)
    assert 200 in codes and 503 in codes and set(codes) <= {200, 503}
    refused = next(r for r in answers if r.status_code == 503)
    assert refused.headers["retry-after"] == "1"
    assert "queue full (1 requests waiting)" in refused.json()["error"]
    assert metric(http, "modelhost_inference_requests_total", "tiny-queue", protocol="v1", code="503") == (
        codes.count(503)
    )


def test_late_answer_is_504(http: httpx.Client) -> None:
    deploy(http, "impatient", timeout_ms=0.001)
    r = http.post("/v1/models/impatient:predict", json={"instances": [[0] * 64]})
    assert r.status_code == 504 and r.json() == {"error": "no answer within 0.001 ms"}


def test_a_client_that_leaves_is_dropped_before_compute(http: httpx.Client, server: Server) -> None:
    deploy(http, "slow-gather", max_wait_ms=1500, max_batch_size=1000)
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
        httpx.post(
            server.url + "/v1/models/slow-gather:predict",
            json={"instances": [[0] * 64] * 7},
            headers=AUTH,
            timeout=0.3,
        )
    r = http.post("/v1/models/slow-gather:predict", json={"instances": [[1] * 64]})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1
    # one forward pass ran, of one row: the abandoned 7 rows were never computed
    assert metric(http, "modelhost_inference_batch_size_count", "slow-gather") == 1
    assert metric(http, "modelhost_inference_batch_size_sum", "slow-gather") == 1


def test_metrics_count_requests_latency_and_replicas(http: httpx.Client) -> None:
    deploy(http, "counted", max_batch_size=8)
    r = http.put("/api/v1/deployments/counted", json={"model": "digits-mlp", "replicas": 2})
    assert r.json()["replicas"] == 2
    for n in (1, 3):
        assert http.post("/v1/models/counted:predict", json={"instances": [[0] * 64] * n}).status_code == 200
    assert http.post("/v1/models/counted:predict", json={"instances": [[0] * 63]}).status_code == 400
    assert metric(http, "modelhost_inference_requests_total", "counted", protocol="v1", code="200") == 2
    assert metric(http, "modelhost_inference_requests_total", "counted", protocol="v1", code="400") == 1
    assert metric(http, "modelhost_inference_request_duration_seconds_count", "counted") == 3
    assert metric(http, "modelhost_inference_batch_size_sum", "counted") == 4
    assert metric(http, "modelhost_deployment_replicas", "counted") == 2
    assert "# TYPE modelhost_inference_queue_duration_seconds histogram" in http.get("/metrics").text
