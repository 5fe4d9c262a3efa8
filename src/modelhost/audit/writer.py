"""Appends audit entries from a background thread, so no request waits on the database.

Fail-open: requests proceed when the log cannot be written. A bounded queue holds entries
while the database is slow; a batch that cannot be written is retried a few times, then
dropped with an ERROR log line naming how many entries were lost, and a full queue drops new
entries the same way. Refusing requests instead (fail-closed) would need the write inside
every request, which costs a database round trip each; the ERROR lines are the signal to
alert on.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Sequence

import sqlalchemy as sa

from modelhost.audit.service import Entry, record
from modelhost.auth.tables import ApiKeyRow
from modelhost.db import Database

log = logging.getLogger("modelhost.audit")

_STOP = object()
RETRY_DELAYS_S = (0.2, 1.0, 3.0)
LOST_LOG_EVERY_S = 10.0


class AuditWriter:
    """A queue of entries drained by one daemon thread, in batches of up to ``batch_size``.

    ``submit`` never blocks; ``flush`` waits until everything submitted before it is written
    (or dropped); ``close`` flushes and stops the thread. The thread starts on first use.
    """

    def __init__(
        self,
        db: Database,
        max_pending: int = 10_000,
        batch_size: int = 500,
        retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S,
    ) -> None:
        self.db, self.batch_size, self.retry_delays_s = db, batch_size, retry_delays_s
        self._queue: queue.Queue[object] = queue.Queue(max_pending)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._prefixes: dict[int, str] = {}
        self.dropped = 0
        self._next_lost_log = 0.0
        """Entries lost so far (queue full, or the database refused them on every retry)."""

    def submit(self, entry: Entry) -> None:
        self._ensure_started()
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self._lost(1, "the queue is full (the database is slow or down)")

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until entries submitted so far are handled; False if ``timeout`` passed first."""
        if self._thread is None:
            return True
        marker = threading.Event()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread (a later ``submit`` starts a new one)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                log.error("audit log: could not stop the writer; %d entries may be lost", self._queue.qsize())
                return
            thread.join(timeout)

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            while len(items) < self.batch_size:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            entries = [i for i in items if isinstance(i, Entry)]
            if entries:
                self._write(entries)
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()
            if _STOP in items:
                return

    def _write(self, entries: list[Entry]) -> None:
        for delay in (*self.retry_delays_s, None):
            try:
                with self.db.session() as s:
                    record(s, self._with_key_prefixes(s, entries))
                return
            except Exception:
                if delay is None:
                    log.exception("audit log: the database refused the batch")
                    self._lost(len(entries), "the database refused them")
                    return
                log.warning("audit log: write failed; retrying in %.1f s", delay, exc_info=True)
                threading.Event().wait(delay)

    def _with_key_prefixes(self, s: sa.orm.Session, entries: Sequence[Entry]) -> list[Entry]:
        """Name keys as ``name (prefix)``: names need not be unique, prefixes tell keys apart."""
        wanted = {e.actor_key_id for e in entries if e.actor_key_id is not None} - self._prefixes.keys()
        if wanted:
            rows = s.execute(sa.select(ApiKeyRow.id, ApiKeyRow.prefix).where(ApiKeyRow.id.in_(wanted)))
            self._prefixes.update({key_id: prefix for key_id, prefix in rows})
        return [
            dataclasses.replace(e, actor=f"{e.actor} ({self._prefixes[e.actor_key_id]})")
            if e.actor_key_id in self._prefixes
            else e
            for e in entries
        ]

    def _lost(self, count: int, why: str) -> None:
        """Count lost entries; log at most every ``LOST_LOG_EVERY_S`` (a flood must not flood the log)."""
        self.dropped += count
        now = time.monotonic()
        if now >= self._next_lost_log:
            self._next_lost_log = now + LOST_LOG_EVERY_S
            log.error("audit log: entries lost because %s (%d lost so far)", why, self.dropped)
