from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from modelhost.artifacts.local import LocalArtifactStore
from modelhost.db import Database


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine, thread hand-offs at these sizes cost more than
    they save (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[Database, LocalArtifactStore]]:
    """A migrated SQLite registry and a local artifact store, private to the test."""
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    db.migrate()
    yield db, LocalArtifactStore(tmp_path / "artifacts")
    db.dispose()
