"""Prometheus metrics, named the Prometheus way: ``modelhost_`` prefix, base units,
``_total`` counters, ``_seconds`` histograms. One registry per app, so tests and several
apps in one process never share counters."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from modelhost.serving.batcher import BatchObserver

disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series only double the exposition size

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r, dv = self.registry, ["deployment", "version"]
        self.requests = Counter(
            "modelhost_inference_requests",
            "Inference requests by outcome (HTTP status code).",
            [*dv, "protocol", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "modelhost_inference_request_duration_seconds",
            "Time from request to answer.",
            dv,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "modelhost_inference_queue_duration_seconds",
            "Time a request waited for its batch.",
            dv,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "modelhost_inference_queue_depth", "Requests waiting in the queue.", dv, registry=r
        )
        self.batch_size = Histogram(
            "modelhost_inference_batch_size", "Rows per forward pass.", dv, buckets=BATCH_BUCKETS, registry=r
        )
        self.shadow = Counter(
            "modelhost_shadow_requests",
            "Requests mirrored to a shadow version, by agreement with the answer.",
            [*dv, "agreement"],
            registry=r,
        )
        self.replicas = Gauge(
            "modelhost_deployment_replicas", "Serving replicas per deployment.", dv, registry=r
        )

    def served(self, deployment: str, version: int) -> ServedMetrics:
        """The series of one served version, its labels bound once."""
        return ServedMetrics(self, deployment, str(version))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ServedMetrics(BatchObserver):
    """One served version's series with their label values bound: ``labels()`` costs more
    than the observation itself, and these run on every request (event loop) and every
    batch (replica threads)."""

    def __init__(self, m: Metrics, deployment: str, version: str) -> None:
        self._requests = m.requests
        self._labels = (deployment, version)
        self._outcomes: dict[tuple[str, int], Counter] = {}
        self._latency = m.latency.labels(deployment, version)
        self._depth = m.queue_depth.labels(deployment, version)
        self._batch = m.batch_size.labels(deployment, version)
        self._queue = m.queue_time.labels(deployment, version)

    def request(self, protocol: str, code: int, seconds: float) -> None:
        """A request answered with ``code`` after ``seconds``."""
        counter = self._outcomes.get((protocol, code))
        if counter is None:
            counter = self._requests.labels(*self._labels, protocol, str(code))
            self._outcomes[protocol, code] = counter
        counter.inc()
        self._latency.observe(seconds)

    def queued(self, depth: int) -> None:
        self._depth.set(depth)

    def batch(self, rows: int, queue_seconds: Sequence[float]) -> None:
        self._batch.observe(rows)
        for q in queue_seconds:
            self._queue.observe(q)
