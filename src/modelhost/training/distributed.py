"""Data-parallel training: ``world_size`` local processes under PyTorch DDP (gloo on CPU,
NCCL on CUDA). Every rank prepares the same data (the split is seeded) and trains on its
shard of each global batch; DDP averages the gradients, so a step equals one process's step
on the whole batch. Rank 0 reports progress, writes checkpoints and registers the result.

The worker is rank 0; ranks 1..N-1 are ``python -m modelhost.training.distributed RUN_ID
RANK WORLD_SIZE INIT_METHOD`` subprocesses that read the run from the store themselves —
nothing is passed between processes but those four values.
"""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from modelhost.training.checkpoints import CheckpointStore
from modelhost.training.data import PreparedData
from modelhost.training.loop import Cancelled, FitResult, Position, ProgressFn, Trainer, fit
from modelhost.training.spec import TrainSpec

COLLECTIVE_TIMEOUT = dt.timedelta(seconds=120)
"""A rank that died leaves the others waiting at most this long, never forever."""


def free_init_method() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _never(*_args: object) -> bool:
    return False


def fit_rank(
    spec: TrainSpec,
    data: PreparedData,
    rank: int,
    init_method: str,
    on_progress: ProgressFn = _never,
    checkpoints: CheckpointStore | None = None,
    on_resume: Callable[[Position], None] | None = None,
) -> FitResult:
    """Join the process group, train this rank's shards, leave the group."""
    cuda = spec.device != "cpu" and torch.cuda.is_available()
    dist.init_process_group(
        "nccl" if cuda else "gloo",
        init_method=init_method,
        rank=rank,
        world_size=spec.world_size,
        timeout=COLLECTIVE_TIMEOUT,
    )
    try:
        if cuda:
            torch.cuda.set_device(rank % torch.cuda.device_count())
        trainer = Trainer(spec, data, rank=rank, world_size=spec.world_size)
        trainer.model = DistributedDataParallel(
            trainer.module, device_ids=[trainer.device.index] if cuda else None
        )
        return fit(spec, data, on_progress if rank == 0 else _never, checkpoints, trainer, on_resume)
    finally:
        dist.destroy_process_group()


def launch_ranks(
    run_id: int, world_size: int, init_method: str, env: dict[str, str], python: str
) -> list[subprocess.Popen[bytes]]:
    """Start ranks 1..world_size-1 of ``run_id``; the caller is rank 0."""
    return [
        subprocess.Popen(
            [
                python,
                "-m",
                "modelhost.training.distributed",
                str(run_id),
                str(rank),
                str(world_size),
                init_method,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        for rank in range(1, world_size)
    ]


def _rank_main(run_id: int, rank: int, init_method: str) -> int:
    from modelhost.artifacts import open_store
    from modelhost.config import load_settings
    from modelhost.datasets.sources import load_source
    from modelhost.db import Database
    from modelhost.training import service as runs
    from modelhost.training.data import given_splits, prepare

    settings = load_settings()
    db = Database(settings.resolved_database_url)
    store = open_store(settings)
    with db.session() as s:
        run = runs.get_run(s, run_id)
        spec = TrainSpec.model_validate(run.spec)
        source = load_source(s, store, run.dataset_id)
        validation, test = given_splits(s, store, spec)
    data = prepare(source, spec, validation, test)
    try:
        fit_rank(spec, data, rank, init_method, checkpoints=CheckpointStore(store, run_id))
    except Cancelled:  # rank 0 was asked to stop, and every rank stopped with it
        pass
    finally:
        db.dispose()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4 or not all(a.isdigit() for a in args[:3]):
        print(
            "usage: python -m modelhost.training.distributed RUN_ID RANK WORLD_SIZE INIT_METHOD",
            file=sys.stderr,
        )
        return 2
    return _rank_main(int(args[0]), int(args[1]), args[3])


if __name__ == "__main__":
    sys.exit(main())
