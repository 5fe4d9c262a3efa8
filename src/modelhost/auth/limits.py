"""Per-key request rates and language-model token quotas, answering RateLimited (429 with
Retry-After) beyond them. A key's limits come with its Principal; None is unlimited.

- **Requests per second** (``rate_limit_rps``): a token bucket per key that holds one
  second's worth of requests (at least one) and refills continuously; a request takes one.
- **Tokens per minute** (``tokens_per_min``): a bucket holding a minute's worth. A request
  is admitted while the bucket holds its prompt's tokens, which it takes; what it generates
  is taken when it finishes, so the bucket may go below zero and later requests wait for
  the debt to refill. A prompt longer than the whole minute's quota can never pass: 400.
- **Tokens in total** (``tokens_total``): ``api_keys.tokens_used`` counts, in the database,
  every token charged to the key (prompt and generated; for every key, limited or not). A
  request is admitted while the count is below the total; requests already running when it
  is reached still finish, so the total can be overshot by what they generate (OpenAI's
  quotas behave the same way).

The buckets live in memory, per process: with several API processes each enforces a rate
on its own (a key gets up to N times its rate); the total is shared through the database.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa

from modelhost.auth.tables import ApiKeyRow
from modelhost.db import Database
from modelhost.errors import InvalidInput, RateLimited

log = logging.getLogger("modelhost.auth")
TOTAL_USED_UP_RETRY_S = 3600.0
"""Retry-After for a key whose total is used up: nothing refills it but an admin."""


class Limited(Protocol):
    """What the limiter reads of a caller (auth's Principal)."""

    key_id: int
    name: str
    rate_limit_rps: float | None
    tokens_per_min: int | None
    tokens_total: int | None


@dataclass(slots=True)
class TokenBucket:
    """``level`` units, refilled at ``rate`` per second up to ``capacity``; may go negative."""

    rate: float
    capacity: float
    level: float
    stamp: float

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` units are in the bucket (0.0: they are now)."""
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.level >= amount else (amount - self.level) / self.rate

    def take(self, amount: float, now: float) -> float:
        """Take ``amount`` if it is there and return 0.0; else take nothing and return the wait."""
        wait = self.wait_for(amount, now)
        if wait == 0.0:
            self.level -= amount
        return wait


class Limiter:
    """The buckets of every key seen by this process, and the tokens it has charged but not
    yet written to the database. Request checks run on the event loop and only touch memory."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.monotonic) -> None:
        self._db, self._clock = db, clock
        self._requests: dict[int, TokenBucket] = {}
        self._tokens: dict[int, TokenBucket] = {}
        self._pending: dict[int, int] = {}  # charged here, not yet committed to tokens_used
        self._lock = threading.Lock()  # _pending, between the loop and the writer threads
        self._db_lock = threading.Lock()  # a read sees a write and its _pending change together

    def _bucket(
        self, buckets: dict[int, TokenBucket], key_id: int, rate: float, capacity: float
    ) -> TokenBucket:
        bucket = buckets.get(key_id)
        if bucket is None or bucket.rate != rate or bucket.capacity != capacity:  # new, or limits changed
            bucket = buckets[key_id] = TokenBucket(rate, capacity, capacity, self._clock())
        return bucket

    def check_request(self, principal: Limited) -> None:
        """Count one request against the key's rate; RateLimited beyond it."""
        rps = principal.rate_limit_rps
        if rps is None:
            return
        bucket = self._bucket(self._requests, principal.key_id, rps, max(1.0, rps))
        wait = bucket.take(1.0, self._clock())
        if wait:
            raise RateLimited(
                f"the key {principal.name!r} may make {rps:g} requests per second; retry in {wait:.2f} s",
                retry_after=wait,
            )

    def quota(self, principal: Limited) -> TokenQuota:
        """The key's token quotas for one language-model request (its usage is counted even
        when it has none: ``tokens_used`` is every key's record)."""
        return TokenQuota(
            self, principal.key_id, principal.name, principal.tokens_per_min, principal.tokens_total
        )

    def minute_bucket(self, key_id: int, per_min: int) -> TokenBucket:
        return self._bucket(self._tokens, key_id, per_min / 60.0, float(per_min))

    def now(self) -> float:
        return self._clock()

    def used(self, key_id: int) -> int:
        """Tokens charged to the key so far: the database's count and this process's pending ones.
        Blocking: call it off the event loop."""
        with self._db_lock:
            with self._db.session() as s:
                stored = s.scalar(sa.select(ApiKeyRow.tokens_used).where(ApiKeyRow.id == key_id)) or 0
            with self._lock:
                return int(stored) + self._pending.get(key_id, 0)

    def record(self, key_id: int, tokens: int) -> None:
        """Charge ``tokens`` to the key's total: counted at once, written by a worker thread (so
        this works in the ``finally`` of a request its client cancelled)."""
        if tokens <= 0:
            return
        with self._lock:
            self._pending[key_id] = self._pending.get(key_id, 0) + tokens
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a generator finalised outside one): write here
            self._write(key_id, tokens)
            return
        loop.run_in_executor(None, self._write, key_id, tokens)

    def _write(self, key_id: int, tokens: int) -> None:
        try:
            with self._db_lock:
                with self._db.session() as s:
                    s.execute(
                        sa.update(ApiKeyRow)
                        .where(ApiKeyRow.id == key_id)
                        .values(tokens_used=ApiKeyRow.tokens_used + tokens)
                    )
                with self._lock:
                    self._pending[key_id] -= tokens
        except Exception:  # the count stays pending in memory; the log says why it is not stored
            log.exception("could not add %d tokens to key %d's count", tokens, key_id)


class TokenQuota:
    """One request's use of its key's token quotas: ``admit`` before it is queued (taking its
    prompt from the minute's bucket), then ``charge`` once it has run, or ``refund`` if it
    was refused before it ran."""

    def __init__(
        self, limiter: Limiter, key_id: int, name: str, per_min: int | None, total: int | None
    ) -> None:
        self.limiter, self.key_id, self.name = limiter, key_id, name
        self.per_min, self.total = per_min, total
        self.prompt_tokens = 0

    async def admit(self, prompt_tokens: int) -> None:
        """RateLimited when a quota is used up; InvalidInput when the prompt alone exceeds a minute's."""
        if self.total is not None:
            used = await asyncio.to_thread(self.limiter.used, self.key_id)
            if used >= self.total:
                raise RateLimited(
                    f"the key {self.name!r} has used its {self.total} tokens ({used} used); "
                    "an admin can raise its tokens_total",
                    retry_after=TOTAL_USED_UP_RETRY_S,
                )
        if self.per_min is not None:
            if prompt_tokens > self.per_min:
                raise InvalidInput(
                    f"the prompt has {prompt_tokens} tokens, "
                    f"more than the key's {self.per_min} tokens per minute"
                )
            wait = self.limiter.minute_bucket(self.key_id, self.per_min).take(
                prompt_tokens, self.limiter.now()
            )
            if wait:
                raise RateLimited(
                    f"the key {self.name!r} may use {self.per_min} tokens per minute; "
                    f"this prompt's {prompt_tokens} fit in {wait:.1f} s",
                    retry_after=wait,
                )
        self.prompt_tokens = prompt_tokens

    def charge(self, completion_tokens: int) -> None:
        """The request ran: its generated tokens leave the minute's bucket, and the prompt's and
        the generated ones count toward the total."""
        if self.per_min is not None and completion_tokens > 0:
            self.limiter.minute_bucket(self.key_id, self.per_min).level -= completion_tokens
        self.limiter.record(self.key_id, self.prompt_tokens + completion_tokens)

    def refund(self) -> None:
        """The request was refused before it ran: the prompt's tokens go back to the bucket."""
        if self.per_min is not None and self.prompt_tokens:
            self.limiter.minute_bucket(self.key_id, self.per_min).level += self.prompt_tokens
        self.prompt_tokens = 0
