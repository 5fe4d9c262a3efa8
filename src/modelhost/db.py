"""The metadata store: engine, sessions, migrations.

SQLAlchemy 2 speaks both SQLite (the embedded default, WAL mode) and PostgreSQL
(psycopg 3), so there is one implementation and no ABC. Each feature package declares
its tables on :class:`Base` in its own ``tables.py``; Alembic migrations under
``modelhost/migrations`` are applied by :func:`Database.migrate` on every start.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from modelhost.errors import InvalidInput

log = logging.getLogger("modelhost.db")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """Timestamps stored as UTC and always returned timezone-aware (SQLite drops the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(dt.UTC)  # SQLite keeps wall-clock time only: store UTC

    def process_result_value(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)  # PostgreSQL answers in the session's TimeZone


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling never BEGINs before a SAVEPOINT, so releasing one
    # would commit the whole session. Let SQLAlchemy issue BEGIN itself (see _sqlite_begin).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # IMMEDIATE takes the write lock up front: a deferred transaction that reads and then
    # writes can fail with SQLITE_BUSY when a worker committed in between. Transactions here
    # are short, and busy_timeout makes the others wait instead of failing.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_db_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


class Database:
    """One engine and its session factory. ``session()`` is a unit of work: commit or roll back."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_db_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work. Services that touch artifacts register compensations with
        :func:`on_rollback` (undo a write) and :func:`after_commit` (a delete that may only
        happen once the rows no longer point at the bytes)."""
        with self._sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException as e:
                s.rollback()
                _run_hooks(s, "on_rollback")
                _raise_unstorable(e)
                raise
            _run_hooks(s, "after_commit")

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent, safe on every start)."""
        from alembic import command
        from alembic.config import Config

        import_all_tables()
        cfg = Config()
        cfg.set_main_option("script_location", str(resources.files("modelhost") / "migrations"))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def dispose(self) -> None:
        self.engine.dispose()


def on_rollback(s: Session, action: Callable[[], object]) -> None:
    """Run ``action`` if this unit of work rolls back (e.g. delete bytes written for it)."""
    s.info.setdefault("on_rollback", []).append(action)


def after_commit(s: Session, action: Callable[[], object]) -> None:
    """Run ``action`` once this unit of work has committed."""
    s.info.setdefault("after_commit", []).append(action)


def _run_hooks(s: Session, kind: str) -> None:
    for action in s.info.pop(kind, []):
        try:
            action()
        except Exception:  # a failed clean-up must not mask the outcome; it is logged
            log.exception("%s hook failed", kind)
    s.info.pop("on_rollback", None)
    s.info.pop("after_commit", None)


def import_all_tables() -> None:
    """Import every feature's tables so ``Base.metadata`` is complete (Alembic, tests)."""
    from modelhost.audit import tables as _audit  # noqa: F401
    from modelhost.auth import tables as _auth  # noqa: F401
    from modelhost.datasets import tables as _datasets  # noqa: F401
    from modelhost.registry import tables as _registry  # noqa: F401
    from modelhost.serving import tables as _serving  # noqa: F401
    from modelhost.training import tables as _training  # noqa: F401


def _raise_unstorable(e: BaseException) -> None:
    """A value from a request that the database cannot hold is the client's error (400), not ours:
    NUL in PostgreSQL text, an integer past SQLite's 64 bits (which sqlite3 raises unwrapped)."""
    if isinstance(e, sa.exc.DataError):
        reason = str(e.orig).splitlines()[0] if e.orig is not None else "invalid value"
        raise InvalidInput(f"a value in the request cannot be stored or searched for: {reason}") from e
    if isinstance(e, OverflowError):
        raise InvalidInput("a number in the request is too large for the database") from e
