"""Deployments over real HTTP: updates, canaries, shadows, rollbacks and scaling under a
steady load that must see zero failed requests; aliases that deployments follow; and a
restart that brings every deployment back."""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import ADMIN_KEY, Server, start_server

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deployments") / "home"


@pytest.fixture(scope="module")
def server(home: Path):
    srv = start_server(home)
    with httpx.Client(base_url=srv.url, headers=AUTH, timeout=60) as http:
        assert http.post("/api/v1/datasets/samples/iris", json={}).status_code == 201
        for seed in (1, 2, 3):  # three versions of "iris"
            run = http.post("/api/v1/runs", json={"dataset": "iris", "epochs": 5, "seed": seed}).json()
            while http.get(f"/api/v1/runs/{run['id']}").json()["status"] in ("queued", "running"):
                pass
    yield srv
    srv.stop()


@pytest.fixture
def http(server: Server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
        yield c


def put(http: httpx.Client, name: str, **spec) -> dict:
    r = http.put(f"/api/v1/deployments/{name}", json={"model": "iris", **spec})
    assert r.status_code in (200, 201), r.text
    return r.json()


def served_versions(http: httpx.Client, name: str, n: int) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        r = http.post(f"/v1/models/{name}:predict", json={"instances": FLOWERS})
        assert r.status_code == 200
        seen[r.json()["model_version"]] += 1
    return seen


class SteadyLoad:
    """Requests back to back from 3 threads until stopped; records every status code."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self.codes: collections.Counter[int] = collections.Counter()
        self.versions: collections.Counter[str] = collections.Counter()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(3)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, headers=AUTH, timeout=30) as c:
            while not self.stop.is_set():
                r = c.post(f"/v1/models/{self.name}:predict", json={"instances": FLOWERS})
                self.codes[r.status_code] += 1
                if r.status_code == 200:
                    self.versions[r.json()["model_version"]] += 1

    def __enter__(self) -> SteadyLoad:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def wait_for(self, n: int) -> None:
        target = sum(self.codes.values()) + n
        while sum(self.codes.values()) < target:
            time.sleep(0.01)


def test_updates_canaries_shadows_rollbacks_and_scaling_drop_nothing(
    http: httpx.Client, server: Server
) -> None:
    assert put(http, "live", version=1)["state"] == "ready"
    with SteadyLoad(server.url, "live") as load:
        load.wait_for(50)
        put(http, "live", version=2)
        load.wait_for(50)
        put(http, "live", traffic=[{"version": 2, "weight": 50}, {"version": 3, "weight": 50}])
        load.wait_for(50)
        put(http, "live", version=3, shadow=1, replicas=2)
        load.wait_for(50)
        r = http.post("/api/v1/deployments/live/rollback")
        assert r.status_code == 200 and r.json()["targets"][0]["version"] == 2
        load.wait_for(50)
    assert load.codes[200] >= 250 and set(load.codes) == {200}, load.codes  # zero failed requests
    assert set(load.versions) == {"1", "2", "3"}


def test_canary_split_follows_its_weights(http: httpx.Client) -> None:
    dep = put(http, "canary", traffic=[{"version": 1, "weight": 70}, {"version": 2, "weight": 30}])
    assert [(t["version"], t["weight"]) for t in dep["targets"]] == [(1, 70.0), (2, 30.0)]
    seen = served_versions(http, "canary", 400)
    assert set(seen) == {"1", "2"} and 0.2 < seen["2"] / 400 < 0.4  # 30% +- 5 standard deviations
    meta = http.get("/v2/models/canary").json()
    assert meta["versions"] == ["1", "2"]
    pinned = http.post(
        "/v2/models/canary/versions/2/infer",
        json={"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": FLOWERS[0]}]},
    )
    assert pinned.status_code == 200 and pinned.json()["model_version"] == "2"
    assert http.get("/v2/models/canary/versions/3/ready").status_code == 404


def test_shadow_gets_a_copy_and_never_answers(http: httpx.Client) -> None:
    put(http, "shadowed", version=1, shadow=2)
    assert served_versions(http, "shadowed", 30) == {"1": 30}

    def mirrored() -> float:
        families = text_string_to_metric_families(http.get("/metrics").text)
        return sum(
            s.value
            for f in families
            for s in f.samples
            if s.name == "modelhost_shadow_requests_total" and s.labels["deployment"] == "shadowed"
        )

    deadline = time.monotonic() + 30
    while mirrored() < 30:
        assert time.monotonic() < deadline, mirrored()
        time.sleep(0.05)
    assert mirrored() == 30


def test_deployments_follow_their_alias(http: httpx.Client) -> None:
    assert http.put("/api/v1/models/iris/aliases/production", json={"version": 1}).json() == {"production": 1}
    assert put(http, "prod", version="production")["version"] == 1
    assert http.put("/api/v1/models/iris/aliases/production", json={"version": 3}).status_code == 200
    assert http.get("/api/v1/deployments/prod").json()["version"] == 3
    assert served_versions(http, "prod", 5) == {"3": 5}
    r = http.put("/api/v1/models/iris/aliases/7", json={"version": 1})
    assert r.status_code == 400 and "cannot be a number" in r.json()["error"]["message"]


def test_rollback_without_history_is_a_conflict(http: httpx.Client) -> None:
    put(http, "fresh", version=1)
    r = http.post("/api/v1/deployments/fresh/rollback")
    assert r.status_code == 409 and "no earlier state" in r.json()["error"]["message"]


def test_deployments_come_back_after_a_restart(http: httpx.Client, server: Server, home: Path) -> None:
    put(http, "durable", traffic=[{"version": 1, "weight": 1}, {"version": 3, "weight": 3}], shadow=2)
    before = {d["name"]: d for d in http.get("/api/v1/deployments").json()}
    server.stop()
    again = start_server(home)
    try:
        with httpx.Client(base_url=again.url, headers=AUTH, timeout=60) as h2:
            after = {d["name"]: d for d in h2.get("/api/v1/deployments").json()}
            assert set(after) == set(before)
            assert all(d["state"] == "ready" for d in after.values()), after
            assert after["durable"]["targets"] == before["durable"]["targets"]
            assert after["durable"]["shadow"]["version"] == 2
            r = h2.post("/v1/models/durable:predict", json={"instances": FLOWERS})
            assert r.status_code == 200 and r.json()["model_version"] in ("1", "3")
    finally:
        again.stop()
