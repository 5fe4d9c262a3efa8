"""The bulk histograms and the served-version series expose what prometheus_client's own
Histogram and Counter would, under the same names."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelhost.observability import metrics
from modelhost.observability.metrics import LATENCY_BUCKETS, BulkHistogram, Metrics

VALUES = [0.0, 0.0005, 0.0007, 0.001, 0.003, 0.2, 1.0, 29.0, 30.0, 31.0, 1e9]  # bounds included


def samples(text: bytes, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
        if s.name == name
    }


def test_buckets_count_what_prometheus_client_counts() -> None:
    registry = CollectorRegistry()
    reference = Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=registry)
    bulk = BulkHistogram(LATENCY_BUCKETS)
    for v in VALUES:
        reference.observe(v)
    bulk.observe_many(VALUES[:5])
    for v in VALUES[5:]:
        bulk.observe(v)
    expected = samples(generate_latest(registry), "h_bucket")
    buckets, total = bulk.snapshot()
    assert {(("le", le),): n for le, n in buckets} == expected
    assert total == sum(VALUES)


def test_a_full_buffer_is_counted_and_emptied(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(metrics, "FLUSH_AT", 4)
    bulk = BulkHistogram([1.0])
    threads = [threading.Thread(target=lambda: [bulk.observe(0.5) for _ in range(1000)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bulk.observe_many([2.0] * 10)
    assert len(bulk._pending) < 4
    assert bulk.snapshot() == ([("1.0", 4000.0), ("+Inf", 4010.0)], 2020.0)


def test_served_versions_expose_counters_and_histograms_by_label() -> None:
    m = Metrics()
    served = m.served("digits", 3)
    assert m.served("digits", 3) is served  # served again (a rollback): it counts on
    served.request("v1", 200, 0.002)
    served.request("v1", 200, 0.004)
    served.request("v2", 400, 0.0001)
    served.batch(3, [0.001, 0.0001, 0.02])
    text = m.render()
    dv = (("deployment", "digits"), ("version", "3"))
    assert samples(text, "modelhost_inference_requests_total") == {
        (("code", "200"), dv[0], ("protocol", "v1"), dv[1]): 2.0,
        (("code", "400"), dv[0], ("protocol", "v2"), dv[1]): 1.0,
    }
    assert samples(text, "modelhost_inference_request_duration_seconds_count") == {dv: 3.0}
    assert samples(text, "modelhost_inference_queue_duration_seconds_count") == {dv: 3.0}
    assert samples(text, "modelhost_inference_batch_size_sum") == {dv: 3.0}
    assert b"# TYPE modelhost_inference_request_duration_seconds histogram" in text
    assert b"# TYPE modelhost_inference_requests_total counter" in text
