"""Metrics of LLM deployments: time to first token, inter-token latency, prompt and
generated tokens, running and waiting sequences, KV-cache use — per deployment."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32)
ITL_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)


class LLMMetrics:
    """The families, registered once per app; ``observer(deployment)`` gives an engine its own."""

    def __init__(self, registry: CollectorRegistry) -> None:
        label = ["deployment"]
        self.ttft = Histogram(
            "modelhost_llm_time_to_first_token_seconds",
            "From a sequence's arrival to its first generated token.",
            label, buckets=TTFT_BUCKETS, registry=registry,
        )  # fmt: skip
        self.itl = Histogram(
            "modelhost_llm_inter_token_latency_seconds",
            "Between consecutive tokens of one sequence.",
            label, buckets=ITL_BUCKETS, registry=registry,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            "modelhost_llm_prompt_tokens_total",
            "Prompt tokens of finished sequences.",
            label,
            registry=registry,
        )
        self.generated_tokens = Counter(
            "modelhost_llm_generation_tokens_total", "Tokens generated.", label, registry=registry
        )
        self.running = Gauge(
            "modelhost_llm_running_sequences", "Sequences in the batch.", label, registry=registry
        )
        self.waiting = Gauge(
            "modelhost_llm_waiting_sequences", "Sequences queued for a slot.", label, registry=registry
        )
        self.cache = Gauge(
            "modelhost_llm_kv_cache_usage_ratio",
            "Share of KV-cache positions in use.",
            label,
            registry=registry,
        )

    def observer(self, deployment: str) -> EngineMetrics:
        return EngineMetrics(self, deployment)


class EngineMetrics:
    """What one engine reports (the engine's ``EngineObserver``), bound to its deployment."""

    def __init__(self, families: LLMMetrics, deployment: str) -> None:
        f = families
        self._ttft, self._itl = f.ttft.labels(deployment), f.itl.labels(deployment)
        self._prompt, self._generated = (
            f.prompt_tokens.labels(deployment),
            f.generated_tokens.labels(deployment),
        )
        self._running, self._waiting, self._cache = (
            f.running.labels(deployment), f.waiting.labels(deployment), f.cache.labels(deployment),
        )  # fmt: skip

    def first_token(self, seconds: float) -> None:
        self._ttft.observe(seconds)
        self._generated.inc()

    def next_token(self, seconds: float) -> None:
        self._itl.observe(seconds)
        self._generated.inc()

    def finished(self, prompt_tokens: int) -> None:
        self._prompt.inc(prompt_tokens)

    def step(self, running: int, waiting: int, cache_used: float) -> None:
        self._running.set(running)
        self._waiting.set(waiting)
        self._cache.set(cache_used)
