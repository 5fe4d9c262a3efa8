"""The generation engine: one thread owns the model and its KV cache and runs steps the
scheduler plans — a decode forward for every running sequence (one token each) and at most
one prefill forward (chunks of one or several prompts) — and hands each sequence's new text
to its request as it is made.

``generate()`` is the asyncio face: an async iterator of :class:`Output` per request; when
the consumer stops (client gone), the sequence is aborted and its slot freed at the next
step.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from modelhost.serving.llm.sampling import Sampled, SamplingParams, SequenceState, sample
from modelhost.serving.llm.scheduler import Chunk, FinishReason, Plan, Scheduler
from modelhost.serving.llm.scheduler import Sequence as Seq
from modelhost.serving.llm.text import Decoder, IncrementalDetokenizer, StopStrings

log = logging.getLogger("modelhost.llm")


class EngineObserver(Protocol):
    """Where an engine reports (modelhost.observability.llm.EngineMetrics)."""

    def first_token(self, seconds: float) -> None: ...
    def next_token(self, seconds: float) -> None: ...
    def finished(self, prompt_tokens: int) -> None: ...
    def step(self, running: int, waiting: int, cache_used: float) -> None: ...


class CausalLM(Protocol):
    def __call__(
        self,
        input_ids: torch.Tensor,
        cache: Any = None,
        slots: torch.Tensor | None = None,
        last_only: bool = False,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


@dataclass
class Output:
    """One step's news for one sequence: new text (possibly ""), the token it came from,
    and on the last one, why it ended."""

    index: int
    """Which of the request's ``n`` choices."""
    text: str
    token_id: int | None
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(eq=False)
class _Live:
    """A sequence with its streaming state and where its outputs go."""

    seq: Seq
    index: int
    sink: Callable[[Output], None]
    detok: IncrementalDetokenizer
    stops: StopStrings
    eos_ids: frozenset[int]
    last_token_at: float | None = None
    created: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class EngineConfig:
    max_seqs: int = 16
    """Sequences decoded together (cache slots)."""
    max_len: int = 2048
    """Longest prompt + completion, in tokens."""
    max_waiting: int = 64
    """Requests queued beyond the running ones before 503."""
    prefill_chunk: int = 256


class Engine:
    def __init__(
        self,
        model: CausalLM,
        make_cache: Callable[[int, int], Any],
        decoder: Decoder,
        eos_ids: Sequence[int],
        config: EngineConfig = EngineConfig(),
    ) -> None:
        self.model, self.decoder, self.config = model, decoder, config
        self.eos_ids = frozenset(eos_ids)
        self.cache = make_cache(config.max_seqs, config.max_len)
        self.scheduler = Scheduler(config.max_seqs, config.max_len, config.max_waiting, config.prefill_chunk)
        self._live: dict[int, _Live] = {}
        self._ids = itertools.count()
        self._lock = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.observer: EngineObserver | None = None

    # --- requests ---------------------------------------------------------------------

    def submit(
        self, prompt_ids: list[int], params: SamplingParams, sink: Callable[[Output], None], n: int = 1
    ) -> list[Seq]:
        """Queue ``n`` sequences of one prompt; their outputs go to ``sink`` (from the engine
        thread). Raises InvalidInput / Overloaded before anything is queued."""
        seqs = []
        for index in range(n):
            sampling = SequenceState(params, prompt_ids)
            if params.seed is not None and index:  # n choices from one seed: different, reproducible
                sampling.generator = torch.Generator().manual_seed(params.seed + index)
            seq = Seq(next(self._ids), prompt_ids, sampling)
            stops = StopStrings(params.stop)
            eos = frozenset() if params.ignore_eos else self.eos_ids
            live = _Live(seq, index, sink, IncrementalDetokenizer(self.decoder, prompt_ids[-4:]), stops, eos)
            seqs.append((seq, live))
        with self._lock:
            self.scheduler.add_all([s for s, _ in seqs])
            for seq, live in seqs:
                self._live[seq.id] = live
            self._lock.notify()
        return [s for s, _ in seqs]

    def abort(self, seqs: Sequence[Seq]) -> None:
        with self._lock:
            for s in seqs:
                self.scheduler.abort(s)
            self._lock.notify()

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams, n: int = 1
    ) -> AsyncIterator[Output]:
        """Outputs as they are made, until all ``n`` choices have finished."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Output] = asyncio.Queue()

        def sink(out: Output) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, out)

        seqs = self.submit(prompt_ids, params, sink, n)
        self.start()
        remaining = n
        try:
            while remaining:
                out = await queue.get()
                remaining -= out.finish_reason is not None
                yield out
        finally:
            if remaining:  # the consumer left early: free the slots at the next step
                self.abort(seqs)

    # --- the loop -----------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="llm-engine", daemon=True)
                self._thread.start()

    def adopt_current_thread(self) -> Callable[[], None]:
        """Make the calling thread this engine's (instead of one :meth:`start` would make);
        returns the loop for that thread to run. See :func:`build_on_own_thread` for why."""
        with self._lock:
            assert self._thread is None, "the engine already has its thread"
            self._thread = threading.current_thread()
        return self._run

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopped and not self.scheduler.busy:
                    self._lock.wait()
                if self._stopped:
                    return
            try:
                self.step()
            except Exception:  # a failed step must not leave requests hanging
                log.exception("engine step failed; ending its sequences")
                self._fail_all()

    def _fail_all(self) -> None:
        with self._lock:
            for live in list(self._live.values()):
                live.seq.finished = "abort"
                live.sink(Output(live.index, "", None, finish_reason="abort"))
            self._live.clear()
            self.scheduler.schedule()

    @torch.inference_mode()
    def step(self) -> Plan:
        """One iteration: plan, feed the prefill chunks, decode a token for every running row."""
        with self._lock:
            plan = self.scheduler.schedule()
            for seq in plan.released:
                self._live.pop(seq.id, None)
        if plan.admitted:
            self.cache.reset([s.slot for s in plan.admitted])
        if plan.prefill:
            self._prefill(plan.prefill)
        if plan.decode:
            self._decode(plan.decode)
        if self.observer is not None:
            s = self.scheduler
            used = float(sum(s_.length for s_ in s.running)) / (self.config.max_seqs * self.config.max_len)
            self.observer.step(len(s.running), len(s.waiting), used)
        return plan

    def _prefill(self, chunks: list[Chunk]) -> None:
        rows = [c.tokens for c in chunks]
        width = max(map(len, rows))
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long)  # right-padded
        slots = torch.tensor([c.seq.slot for c in chunks], dtype=torch.long)
        lengths = None if all(len(r) == width for r in rows) else torch.tensor(list(map(len, rows)))
        logits = self.model(ids, cache=self.cache, slots=slots, last_only=True, lengths=lengths)
        done = []
        for i, c in enumerate(chunks):
            c.seq.fed = c.end
            if not c.seq.prefilling:  # the prompt is in: its last logits give the first token
                done.append(i)
        if done:
            seqs = [chunks[i].seq for i in done]
            self._advance(seqs, sample(logits[done, -1], [s.sampling for s in seqs]))

    def _decode(self, seqs: list[Seq]) -> None:
        ids = torch.tensor([[s.output_ids[-1]] for s in seqs], dtype=torch.long)
        slots = torch.tensor([s.slot for s in seqs], dtype=torch.long)
        logits = self.model(ids, cache=self.cache, slots=slots, last_only=True)
        self._advance(seqs, sample(logits[:, -1], [s.sampling for s in seqs]))

    def _advance(self, seqs: list[Seq], sampled: Sampled) -> None:
        now = time.monotonic()
        for i, seq in enumerate(seqs):
            live = self._live.get(seq.id)
            if live is None or seq.finished is not None:  # aborted while this step ran
                continue
            token = sampled.tokens[i]
            seq.output_ids.append(token)
            if self.observer is not None:
                if live.last_token_at is None:
                    self.observer.first_token(now - live.created)
                else:
                    self.observer.next_token(now - live.last_token_at)
            live.last_token_at = now
            reason: FinishReason | None = None
            text = ""
            if token in live.eos_ids or token in seq.sampling.params.stop_token_ids:
                reason = "stop"
                text = live.stops.flush()
            else:
                text, hit = live.stops.feed(live.detok.push(token))
                if hit:
                    reason = "stop"
                elif (
                    len(seq.output_ids) >= seq.sampling.params.max_tokens or seq.length >= self.config.max_len
                ):
                    reason = "length"
                    text += live.stops.feed(live.detok.flush())[0] + live.stops.flush()
            top = sampled.top[i] if sampled.top is not None else None
            out = Output(
                live.index, text, token, sampled.logprobs[i], top, reason,
                len(seq.prompt_ids), len(seq.output_ids),
            )  # fmt: skip
            if reason is not None:
                seq.finished = reason
                if self.observer is not None:
                    self.observer.finished(len(seq.prompt_ids))
            live.sink(out)
