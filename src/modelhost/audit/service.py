"""Append and read the audit log.

Rows are only ever inserted (the database refuses UPDATE and DELETE on ``audit_log``, see
migration 0008). Reads take filters that are checked against allow-lists before they reach
SQL, and every value is bound, never formatted into a statement: a filter that does not fit
its pattern is InvalidInput (400), not a database error.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import Session

from modelhost.audit.tables import OUTCOMES, AuditRow
from modelhost.errors import InvalidInput

Outcome = Literal["ok", "denied", "failed"]
METHODS = ("POST", "PUT", "PATCH", "DELETE")
MAX_LIMIT = 1000

_ACTOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}( \([A-Za-z0-9_-]{1,32}\))?")
"""A key or user name, optionally followed by a key prefix in parentheses, as rows show it."""
_PATH = re.compile(r"/[A-Za-z0-9_.:{}/-]{0,511}")
"""A route template or a path prefix: what an ``action`` filter may name after its method."""


@dataclass(frozen=True)
class Entry:
    """One state change to append: who, what, when, from where, and how it ended."""

    at: dt.datetime
    actor: str
    method: str
    path: str
    status: int
    outcome: Outcome
    client: str
    actor_key_id: int | None = None
    user_id: int | None = None
    project_id: int | None = None
    target: str | None = None
    request_id: str | None = None


class AuditEntry(BaseModel):
    """An audit log row as the API returns it."""

    id: int
    at: dt.datetime
    actor: str
    actor_key_id: int | None
    user_id: int | None
    project_id: int | None
    method: str
    path: str
    target: str | None
    status: int
    outcome: Outcome
    client: str
    request_id: str | None


class AuditPage(BaseModel):
    """Entries newest first; pass ``next_cursor`` back as ``cursor`` for the next (older) page."""

    entries: list[AuditEntry]
    next_cursor: int | None


def outcome_of(status: int) -> Outcome:
    """401 and 403 are denials; any other 4xx or 5xx is a failure."""
    if status in (401, 403):
        return "denied"
    return "ok" if status < 400 else "failed"


def record(s: Session, entries: Sequence[Entry]) -> None:
    """Append ``entries`` in one statement (the caller's unit of work commits them)."""
    if entries:
        s.execute(sa.insert(AuditRow), [asdict(e) for e in entries])


def query(
    s: Session,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    actor: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    limit: int = 100,
    cursor: int | None = None,
) -> AuditPage:
    """Entries matching every given filter, newest first, at most ``limit`` of them.

    ``actor`` is a name (every key or user of that name) or ``name (prefix)`` as rows show it;
    ``action`` is a method (``DELETE``), a path prefix (``/api/v1/datasets``) or both
    (``DELETE /api/v1/datasets``); ``cursor`` is the previous page's ``next_cursor``.
    Raises InvalidInput naming the first filter that is malformed.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
    stmt = sa.select(AuditRow).where(*_conditions(since, until, actor, action, outcome, cursor))
    rows = list(s.scalars(stmt.order_by(AuditRow.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    entries = [AuditEntry.model_validate(r, from_attributes=True) for r in rows[:limit]]
    return AuditPage(entries=entries, next_cursor=entries[-1].id if more else None)


def _conditions(
    since: dt.datetime | None,
    until: dt.datetime | None,
    actor: str | None,
    action: str | None,
    outcome: str | None,
    cursor: int | None,
) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if since is not None:
        where.append(AuditRow.at >= _aware("since", since))
    if until is not None:
        where.append(AuditRow.at < _aware("until", until))
    if actor is not None:
        where.append(_actor_condition(actor))
    if action is not None:
        where.extend(_action_conditions(action))
    if outcome is not None:
        if outcome not in OUTCOMES:
            raise InvalidInput(f"outcome must be one of {', '.join(OUTCOMES)}")
        where.append(AuditRow.outcome == outcome)
    if cursor is not None:
        if not 1 <= cursor <= 2**63 - 1:
            raise InvalidInput("cursor must be a positive integer from a previous page's next_cursor")
        where.append(AuditRow.id < cursor)
    return where


def _aware(name: str, t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None:
        raise InvalidInput(f"{name} needs a timezone, e.g. 2030-01-01T00:00:00Z")
    return t


def _actor_condition(actor: str) -> sa.ColumnElement[bool]:
    if not _ACTOR.fullmatch(actor):
        raise InvalidInput("actor must be a key or user name, optionally followed by ' (key prefix)'")
    if "(" in actor:
        return AuditRow.actor == actor
    return sa.or_(AuditRow.actor == actor, AuditRow.actor.startswith(actor + " (", autoescape=True))


def _action_conditions(action: str) -> list[sa.ColumnElement[bool]]:
    method, _, path = action.partition(" ") if not action.startswith("/") else ("", "", action)
    where: list[sa.ColumnElement[bool]] = []
    if method:
        if method.upper() not in METHODS:
            raise InvalidInput(
                f"action must be a method ({', '.join(METHODS)}), a path starting with '/', or both"
            )
        where.append(AuditRow.method == method.upper())
    if path or not method:
        if not _PATH.fullmatch(path):
            raise InvalidInput("the path in action may hold only letters, digits and . _ : - / { }")
        where.append(AuditRow.path.startswith(path, autoescape=True))
    return where
