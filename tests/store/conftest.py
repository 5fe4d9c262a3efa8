"""The metadata store on both of its databases: SQLite in a temp folder, and the real
PostgreSQL at 127.0.0.1:5432 in a fresh database per test (no mocks, no shared state)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from modelhost.artifacts.local import LocalArtifactStore
from modelhost.db import Database
from tests.conftest import fresh_postgres_db


@pytest.fixture(scope="session")
def postgres_template(postgres_admin: Engine) -> Iterator[str]:
    """A database migrated once per session from empty; each test copies it (saves its migration time)."""
    with fresh_postgres_db(postgres_admin) as url:
        template = Database(url)
        try:
            template.migrate()
        finally:
            template.dispose()  # CREATE DATABASE ... TEMPLATE needs it to have no connections
        yield sa.engine.make_url(url).database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated Database, empty and private to this test."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'modelhost.db'}"
        else:
            admin, template = (request.getfixturevalue(f) for f in ("postgres_admin", "postgres_template"))
            url = stack.enter_context(fresh_postgres_db(admin, template))
        database = Database(url)
        stack.callback(database.dispose)  # runs before the DROP: no pooled connection outlives the test
        database.migrate()  # from empty on SQLite; on PostgreSQL a no-op at head, as on every restart
        yield database


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")
