"""DDP over 2 local processes (gloo): one step equals one process's step on the same global
batch, and a 2-process run converges like a 1-process run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from modelhost.datasets.formats import parse_csv
from modelhost.datasets.samples import sample_csv
from modelhost.datasets.sources import TableSource
from modelhost.training.data import prepare
from modelhost.training.distributed import fit_rank, free_init_method
from modelhost.training.loop import Trainer, fit
from modelhost.training.spec import parse_spec

SPEC = {
    "dataset": "wine",
    "target": "label",
    "batch_size": 32,
    "model": {"hidden_sizes": [32]},
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
}


def _data(spec):
    return prepare(TableSource(parse_csv(sample_csv("wine")[0])), spec)


def _rank(rank: int, init_method: str, init_method_2: str, out: str) -> None:
    """Both experiments in one spawn (starting processes is the slow part): one DDP step,
    then a whole 2-process run."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    spec = parse_spec({**SPEC, "world_size": 2, "epochs": 1})
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=2)
    t = Trainer(spec, _data(spec), rank=rank, world_size=2)
    t.model = DistributedDataParallel(t.module)
    idx = next(t.batches(1, 0))
    t.train_step(t.x[idx], t.y[idx])
    dist.destroy_process_group()
    spec = parse_spec({**SPEC, "world_size": 2, "epochs": 15})
    result = fit_rank(spec, _data(spec), rank, init_method_2)
    if rank == 0:
        state = {f"step.{k}": v.contiguous() for k, v in t.module.state_dict().items()}
        save_file({**state, "val_accuracy": torch.tensor(result.metrics["val_accuracy"])}, out)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> dict[str, torch.Tensor]:
    out = str(tmp_path_factory.mktemp("ddp") / "rank0.safetensors")
    mp.spawn(_rank, args=(free_init_method(), free_init_method(), out), nprocs=2, join=True)
    return load_file(out)


def test_one_ddp_step_equals_one_step_on_the_global_batch(two_processes) -> None:
    two = {k[5:]: v for k, v in two_processes.items() if k.startswith("step.")}
    spec = parse_spec({**SPEC, "epochs": 1})
    t = Trainer(spec, _data(spec))
    idx = next(t.batches(1, 0))
    assert len(idx) == 32  # the whole global batch in one process
    t.train_step(t.x[idx], t.y[idx])
    one = t.module.state_dict()
    assert two.keys() == one.keys()
    for k in one:
        assert torch.allclose(two[k], one[k], atol=1e-6, rtol=0), k
    assert not torch.equal(
        one["net.0.weight"], Trainer(spec, _data(spec)).module.state_dict()["net.0.weight"]
    )


def test_two_processes_converge_like_one(two_processes) -> None:
    two = float(two_processes["val_accuracy"])
    spec = parse_spec({**SPEC, "epochs": 15})
    one = fit(spec, _data(spec), lambda *_: False).metrics["val_accuracy"]
    assert one > 0.9 and two > 0.9
    assert abs(one - two) <= 0.06  # at most 2 of 36 held-out wines apart
    assert np.isfinite(two)
