from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_one_thread() -> Iterator[None]:
    """Same weights and data every run, so thresholds hold; one intra-op thread, because at these sizes
    thread hand-offs cost more than they save and spin badly on a busy machine (50 s instead of 5 s)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
