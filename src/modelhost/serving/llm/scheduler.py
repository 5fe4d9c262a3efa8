"""Which sequences run at the next step: continuous (iteration-level) batching, pure Python.

Every step decodes one token for each running sequence whose prompt is in the cache, and
feeds prompt chunks of at most ``prefill_chunk`` tokens in all — one long prompt's chunk, or
several short prompts together (a burst of requests gets its first tokens in a few steps,
not one step each) — so prompts never stall the others for more than one chunk. A new
sequence joins at the next step if a cache slot is free; a finished or abandoned one leaves at
once and frees its slot. Waiting room is bounded: beyond it,
``add`` raises Overloaded (503 with Retry-After), never unbounded memory.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from modelhost.errors import InvalidInput, Overloaded
from modelhost.serving.llm.sampling import SequenceState

FinishReason = Literal["stop", "length", "abort"]


@dataclass(eq=False)
class Sequence:
    id: int
    prompt_ids: list[int]
    sampling: SequenceState
    slot: int | None = None
    fed: int = 0
    """Prompt tokens already in the cache."""
    finished: FinishReason | None = None

    @property
    def output_ids(self) -> list[int]:
        return self.sampling.output_ids

    @property
    def prefilling(self) -> bool:
        return self.fed < len(self.prompt_ids)

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)


@dataclass(frozen=True)
class Chunk:
    seq: Sequence
    start: int
    end: int
    """Prompt positions [start, end) fed this step."""

    @property
    def tokens(self) -> list[int]:
        return self.seq.prompt_ids[self.start : self.end]


@dataclass
class Plan:
    prefill: list[Chunk] = field(default_factory=list)
    """Prompt chunks fed together this step (one forward, right-padded to the longest)."""
    decode: list[Sequence] = field(default_factory=list)
    admitted: list[Sequence] = field(default_factory=list)
    """Sequences that got a slot this step (their slot's cache must be reset)."""
    released: list[Sequence] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.prefill and not self.decode

    @property
    def prefill_tokens(self) -> int:
        return sum(c.end - c.start for c in self.prefill)


class Scheduler:
    def __init__(self, max_seqs: int, max_len: int, max_waiting: int, prefill_chunk: int = 256) -> None:
        self.max_len, self.max_waiting, self.prefill_chunk = max_len, max_waiting, prefill_chunk
        self.free_slots = list(range(max_seqs))
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        """Queue ``seq``; InvalidInput when it cannot fit the context, Overloaded when full."""
        need = len(seq.prompt_ids) + seq.sampling.params.max_tokens
        if not seq.prompt_ids:
            raise InvalidInput("prompt: it has no tokens")
        if len(seq.prompt_ids) >= self.max_len:
            raise InvalidInput(
                f"prompt: {len(seq.prompt_ids)} tokens; this deployment's context is {self.max_len} tokens"
            )
        if need > self.max_len:
            raise InvalidInput(
                f"max_tokens: the prompt ({len(seq.prompt_ids)} tokens) plus max_tokens "
                f"({seq.sampling.params.max_tokens}) exceeds the context of {self.max_len} tokens"
            )
        if len(self.waiting) >= self.max_waiting:
            raise Overloaded(f"{len(self.waiting)} requests are waiting already; try again shortly", 1)
        self.waiting.append(seq)

    def add_all(self, seqs: list[Sequence]) -> None:
        """All of ``seqs`` (a request's ``n`` choices) or none of them."""
        if len(self.waiting) + len(seqs) > self.max_waiting:
            raise Overloaded(f"{len(self.waiting)} requests are waiting already; try again shortly", 1)
        for s in seqs:
            self.add(s)

    def abort(self, seq: Sequence) -> None:
        """Mark ``seq`` abandoned (its client left); it leaves at the next step."""
        if seq.finished is None:
            seq.finished = "abort"

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> Plan:
        plan = Plan()
        for seq in [s for s in self.running if s.finished is not None]:
            self.running.remove(seq)
            assert seq.slot is not None
            self.free_slots.append(seq.slot)
            plan.released.append(seq)
        self.waiting = deque(s for s in self.waiting if s.finished is None)
        while self.waiting and self.free_slots:
            seq = self.waiting.popleft()
            seq.slot = self.free_slots.pop(0)
            self.running.append(seq)
            plan.admitted.append(seq)
        plan.decode = [s for s in self.running if not s.prefilling]
        plan.prefill = self._chunks([s for s in self.running if s.prefilling])
        return plan

    def _chunks(self, prefilling: list[Sequence]) -> list[Chunk]:
        """The oldest prompt's next chunk, then whole further prompts while the padded batch
        (rows x longest chunk) stays within ``prefill_chunk`` tokens and every row's padding
        stays inside the cache."""
        if not prefilling:
            return []
        first = prefilling[0]
        chunks = [Chunk(first, first.fed, min(first.fed + self.prefill_chunk, len(first.prompt_ids)))]
        width = chunks[0].end - chunks[0].start
        for seq in prefilling[1:]:
            n = len(seq.prompt_ids) - seq.fed
            w = max(width, n)
            if w * (len(chunks) + 1) > self.prefill_chunk:
                break
            if any(c.start + w > self.max_len for c in chunks) or seq.fed + w > self.max_len:
                break
            chunks.append(Chunk(seq, seq.fed, seq.fed + n))
            width = w
        return chunks
