"""Turning one step's logits into next tokens, a row per sequence, each row with its own
parameters: penalties (repetition; OpenAI's presence and frequency), temperature, top-k,
top-p, min-p, and a per-request seeded generator — same seed, same text.

Rows with ``temperature == 0`` are greedy. Log-probabilities are of the model's own
distribution (``log_softmax`` of the raw logits), as OpenAI reports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

MAX_STOP = 16
"""Most stop strings per request, as OpenAI allows 4; we are a little more generous."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int = 0
    """0: off."""
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    """> 1 discourages any token already in the prompt or the output (divides its logit)."""
    presence_penalty: float = 0.0
    """OpenAI: subtracted once from the logit of every token the output already holds."""
    frequency_penalty: float = 0.0
    """OpenAI: subtracted per occurrence in the output."""
    seed: int | None = None
    max_tokens: int = 16
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None
    """How many top alternatives to report per token (0: only the chosen token's)."""

    def __post_init__(self) -> None:
        checks = [
            (self.temperature >= 0, "temperature must be at least 0"),
            (self.top_k >= 0, "top_k must be at least 0 (0 turns it off)"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
            (self.repetition_penalty > 0, "repetition_penalty must be above 0"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
            (self.max_tokens >= 1, "max_tokens must be at least 1"),
            (len(self.stop) <= MAX_STOP, f"at most {MAX_STOP} stop strings"),
            (all(self.stop), "stop strings must not be empty"),
            (self.logprobs is None or 0 <= self.logprobs <= 20, "logprobs must be in [0, 20]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


@dataclass
class SequenceState:
    """What sampling needs to know about one sequence: its params, its tokens so far, and
    its own random stream (seeded when the request gave a seed)."""

    params: SamplingParams
    prompt_ids: list[int]
    output_ids: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if self.generator is None and self.params.seed is not None:
            self.generator = torch.Generator().manual_seed(self.params.seed)


@dataclass(frozen=True)
class Sampled:
    tokens: list[int]
    logprobs: list[float]
    """Each chosen token's log-probability under the model."""
    top: list[list[tuple[int, float]]] | None
    """Per row, the ``logprobs`` most likely tokens and theirs (None when nobody asked)."""


def apply_penalties(logits: torch.Tensor, states: Sequence[SequenceState]) -> torch.Tensor:
    """(B, V) logits with each row's penalties applied (a new tensor when any applies)."""
    rows = [i for i, s in enumerate(states) if _penalised(s.params)]
    if not rows:
        return logits
    logits = logits.clone()
    vocab = logits.shape[-1]
    for i in rows:
        p, row = states[i].params, logits[i]
        if p.repetition_penalty != 1.0:
            seen = torch.tensor(
                sorted(set(states[i].prompt_ids) | set(states[i].output_ids)), dtype=torch.long
            )
            seen = seen[seen < vocab]
            vals = row[seen]
            row[seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
        if (p.presence_penalty or p.frequency_penalty) and states[i].output_ids:
            counts = torch.bincount(torch.tensor(states[i].output_ids, dtype=torch.long), minlength=vocab)[
                :vocab
            ]
            row -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0)
    return logits


def _penalised(p: SamplingParams) -> bool:
    return p.repetition_penalty != 1.0 or p.presence_penalty != 0.0 or p.frequency_penalty != 0.0


def _filter(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """One row's logits after temperature, top-k, top-p and min-p; removed tokens are -inf."""
    x = logits / p.temperature
    if p.top_k and p.top_k < x.shape[-1]:
        kth = torch.topk(x, p.top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if p.top_p < 1.0 or p.min_p > 0.0:
        probs = torch.softmax(x, dim=-1)
        if p.min_p > 0.0:
            x = x.masked_fill(probs < p.min_p * probs.max(), float("-inf"))
        if p.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            # keep the smallest prefix whose mass reaches top_p (the token that crosses it stays)
            drop_sorted = sorted_probs.cumsum(-1) - sorted_probs >= p.top_p
            drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
            x = x.masked_fill(drop, float("-inf"))
    return x


def sample(logits: torch.Tensor, states: Sequence[SequenceState]) -> Sampled:
    """The next token of each row of ``logits`` (B, V), float32, following its own params."""
    logits = logits.float()
    raw_logprobs = torch.log_softmax(logits, dim=-1)
    processed = apply_penalties(logits, states)
    tokens: list[int] = []
    for i, state in enumerate(states):
        p = state.params
        if p.greedy:
            tokens.append(int(processed[i].argmax()))
            continue
        probs = torch.softmax(_filter(processed[i], p), dim=-1)
        tokens.append(int(torch.multinomial(probs, 1, generator=state.generator)))
    chosen = torch.tensor(tokens)
    logprobs = raw_logprobs[torch.arange(len(tokens)), chosen].tolist()
    want = max((s.params.logprobs or 0) for s in states)
    top = None
    if any(s.params.logprobs is not None for s in states):
        values, ids = torch.topk(raw_logprobs, max(1, want), dim=-1)
        top = [
            list(
                zip(
                    ids[i, : s.params.logprobs or 0].tolist(),
                    values[i, : s.params.logprobs or 0].tolist(),
                    strict=True,
                )
            )
            for i, s in enumerate(states)
        ]
    return Sampled(tokens=tokens, logprobs=logprobs, top=top)
