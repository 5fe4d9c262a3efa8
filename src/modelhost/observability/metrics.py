"""Prometheus metrics, named the Prometheus way: ``modelhost_`` prefix, base units,
``_total`` counters, ``_seconds`` histograms. One registry per app, so tests and several
apps in one process never share counters.

The series observed on every request or every row of a batch (outcomes, latency, queue time,
batch size) are kept by :class:`ServedMetrics` and exposed by a collector at scrape time:
prometheus_client's ``observe`` takes a lock and walks the buckets for each value, which on
the serving path costs more than the work it measures; here a value is appended to a buffer
and the buffer is sorted into buckets with numpy, in bulk.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from modelhost.serving.batcher import BatchObserver

disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series only double the exposition size

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
FLUSH_AT = 4096  # buffered values before they are sorted into buckets (bounds the buffer's memory)


class BulkHistogram:
    """A histogram whose observations are buffered, then counted into buckets in bulk; safe
    to observe from several threads. Buckets are Prometheus's: a value counts in every bucket
    whose upper bound is at least the value."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = np.asarray(bounds, dtype=np.float64)
        self._labels = [floatToGoString(b) for b in bounds]  # type: ignore[no-untyped-call]
        self._counts = np.zeros(len(bounds) + 1, dtype=np.int64)  # the last: above every bound
        self._sum = 0.0
        self._pending: list[float] = []
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self._pending.append(value)
            if len(self._pending) >= FLUSH_AT:
                self._count_pending()

    def observe_many(self, values: Sequence[float]) -> None:
        with self._lock:
            self._pending.extend(values)
            if len(self._pending) >= FLUSH_AT:
                self._count_pending()

    def _count_pending(self) -> None:  # with the lock held
        values = np.asarray(self._pending, dtype=np.float64)
        self._pending = []
        self._counts += np.bincount(np.searchsorted(self._bounds, values), minlength=len(self._counts))
        self._sum += float(values.sum())

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        """Cumulative ``(le, count)`` pairs ending with ``+Inf``, and the sum of the values."""
        with self._lock:
            self._count_pending()
            cumulative, total = np.cumsum(self._counts), self._sum
        buckets = [(le, float(n)) for le, n in zip(self._labels, cumulative[:-1], strict=True)]
        return [*buckets, ("+Inf", float(cumulative[-1]))], total


class ServedMetrics(BatchObserver):
    """The per-request and per-batch series of one served version (deployment, version)."""

    def __init__(self, queue_depth: Gauge, deployment: str, version: str) -> None:
        self.labels = (deployment, version)
        self.latency = BulkHistogram(LATENCY_BUCKETS)
        self.queue_time = BulkHistogram(LATENCY_BUCKETS)
        self.batch_size = BulkHistogram(BATCH_BUCKETS)
        self._outcomes: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._depth = queue_depth.labels(deployment, version)

    def request(self, protocol: str, code: int, seconds: float) -> None:
        """A request answered with ``code`` after ``seconds``."""
        key = (protocol, code)
        with self._lock:
            self._outcomes[key] = self._outcomes.get(key, 0) + 1
        self.latency.observe(seconds)

    def outcomes(self) -> dict[tuple[str, int], int]:
        with self._lock:
            return dict(self._outcomes)

    def queued(self, depth: int) -> None:
        self._depth.set(depth)

    def batch(self, rows: int, queue_seconds: Sequence[float]) -> None:
        self.batch_size.observe(rows)
        self.queue_time.observe_many(queue_seconds)


class _ServedCollector(Collector):
    """Exposes every ServedMetrics of a Metrics at scrape time."""

    def __init__(self, served: dict[tuple[str, str], ServedMetrics]) -> None:
        self._served = served

    def collect(self) -> Iterator[Metric]:
        dv = ["deployment", "version"]
        requests = CounterMetricFamily(
            "modelhost_inference_requests",
            "Inference requests by outcome (HTTP status code).",
            labels=[*dv, "protocol", "code"],
        )
        histograms = {
            "latency": HistogramMetricFamily(
                "modelhost_inference_request_duration_seconds", "Time from request to answer.", labels=dv
            ),
            "queue_time": HistogramMetricFamily(
                "modelhost_inference_queue_duration_seconds",
                "Time a request waited for its batch.",
                labels=dv,
            ),
            "batch_size": HistogramMetricFamily(
                "modelhost_inference_batch_size", "Rows per forward pass.", labels=dv
            ),
        }
        for served in list(self._served.values()):
            for (protocol, code), n in sorted(served.outcomes().items()):
                requests.add_metric([*served.labels, protocol, str(code)], n)
            for attribute, family in histograms.items():
                buckets, total = getattr(served, attribute).snapshot()
                family.add_metric(list(served.labels), buckets, total)
        yield requests
        yield from histograms.values()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r, dv = self.registry, ["deployment", "version"]
        self._served: dict[tuple[str, str], ServedMetrics] = {}
        self._served_lock = threading.Lock()
        r.register(_ServedCollector(self._served))
        self.queue_depth = Gauge(
            "modelhost_inference_queue_depth", "Requests waiting in the queue.", dv, registry=r
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
        """The series of one served version: the same object for as long as this app runs, so
        a version served again (a rollback) counts on."""
        key = (deployment, str(version))
        with self._served_lock:
            if key not in self._served:
                self._served[key] = ServedMetrics(self.queue_depth, *key)
            return self._served[key]

    def render(self) -> bytes:
        return generate_latest(self.registry)
