"""Fixtures every suite may use: the real PostgreSQL at 127.0.0.1:5432 and moto's S3 server."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from moto.server import ThreadedMotoServer
from sqlalchemy.engine import Engine

S3_CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "region_name": "us-east-1",
}

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """An AUTOCOMMIT engine on the ``test`` database, for CREATE and DROP DATABASE.

    Unreachable: a skip on a developer machine, a failure under CI (which must run these tests).
    """
    engine = sa.create_engine(
        f"{PG_SERVER}/test", isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as e:
        engine.dispose()
        message = f"PostgreSQL at 127.0.0.1:5432 is not reachable ({e.orig}); start it with: {PG_START}"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so the PostgreSQL tests must run, not skip. {message}", pytrace=False)
        pytest.skip(message)
    yield engine
    engine.dispose()


@contextlib.contextmanager
def fresh_postgres_db(admin: Engine, template: str = "template1") -> Iterator[str]:
    """The URL of a new database copied from ``template``, dropped (connections and all) on exit."""
    name = f"mh_test_{uuid.uuid4().hex}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name} TEMPLATE {template}")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3-compatible server, in this process, on a free loopback port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (``pytest.mark.anyio``) run on asyncio, the loop the server uses."""
    return "asyncio"
