"""Runs that survive: a run stopped at step k and resumed ends bitwise equal to the same run
never stopped — whether it was cancelled (checkpoint at the stop) or crashed (checkpoint
every N steps, the steps after the last one are redone)."""

from __future__ import annotations

import pytest
import torch

from modelhost.artifacts import open_artifacts
from modelhost.datasets.formats import parse_csv
from modelhost.datasets.samples import sample_csv
from modelhost.datasets.sources import TableSource
from modelhost.errors import ArtifactCorrupted
from modelhost.training.checkpoints import Checkpoint, CheckpointStore
from modelhost.training.data import prepare
from modelhost.training.loop import Cancelled, Trainer, fit
from modelhost.training.spec import parse_spec


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def wine():
    return TableSource(parse_csv(sample_csv("wine")[0]))


SPEC = {
    "dataset": "wine",
    "target": "label",
    "epochs": 4,
    "batch_size": 16,
    "model": {"hidden_sizes": [32, 16], "dropout": 0.2},  # dropout draws from the global RNG
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
    "schedule": {"name": "cosine", "warmup_steps": 5},
    "grad_clip": 1.0,
}


def never(*_args) -> bool:
    return False


def weights(result) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in result.model.state_dict().items()}


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.fixture
def store(tmp_path):
    return open_artifacts(tmp_path.as_uri())


@pytest.mark.parametrize("schedule", ["cosine", "step", "plateau"])
def test_cancelled_run_resumes_to_the_same_weights(wine, store, schedule) -> None:
    spec = parse_spec(
        {**SPEC, "schedule": {"name": schedule, "warmup_steps": 0 if schedule == "plateau" else 5}}
    )
    data = prepare(wine, spec)
    straight = fit(spec, data, never)

    def cancel_at_step_13(step, total, epoch, metrics) -> bool:
        return step == 13 and epoch is None  # mid-epoch 2 (9 steps per epoch)

    ckpts = CheckpointStore(store, run_id=1)
    with pytest.raises(Cancelled, match="cancelled at step 13"):
        fit(spec, data, cancel_at_step_13, ckpts)
    saved = ckpts.load()
    assert saved is not None and saved.state["position"]["step"] == 13
    resumed = fit(spec, data, never, ckpts)
    assert_bitwise_equal(weights(straight), weights(resumed))
    assert resumed.metrics == straight.metrics


def test_crashed_run_redoes_the_steps_since_its_last_checkpoint(wine, store) -> None:
    spec = parse_spec({**SPEC, "checkpoint_every": 4})
    data = prepare(wine, spec)
    straight = fit(spec, data, never)

    def crash_at_step_15(step, total, epoch, metrics) -> bool:
        if step == 15:
            raise Crash("worker died")
        return False

    ckpts = CheckpointStore(store, run_id=2)
    with pytest.raises(Crash):
        fit(spec, data, crash_at_step_15, ckpts)
    assert ckpts.load().state["position"]["step"] == 12  # the last multiple of 4 before the crash
    assert_bitwise_equal(weights(straight), weights(fit(spec, data, never, ckpts)))


def test_a_different_seed_gives_different_weights(wine) -> None:
    a = fit(parse_spec(SPEC), prepare(wine, parse_spec(SPEC)), never)
    b = fit(parse_spec({**SPEC, "seed": 1}), prepare(wine, parse_spec({**SPEC, "seed": 1})), never)
    assert not torch.equal(a.model.state_dict()["net.0.weight"], b.model.state_dict()["net.0.weight"])


def test_checkpoint_holds_the_optimiser_state_exactly(wine) -> None:
    spec = parse_spec({**SPEC, "optimizer": {"name": "adamw", "lr": 0.01}})
    t = Trainer(spec, prepare(wine, spec))
    for idx in t.batches(1, 0):
        t.train_step(t.x[idx], t.y[idx])
    ckpt = Checkpoint.from_bytes(t.checkpoint().to_bytes())
    t2 = Trainer(spec, prepare(wine, spec))
    t2.restore(ckpt)
    a, b = t.opt.state_dict(), t2.opt.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid, st in a["state"].items():
        for k, v in st.items():
            assert torch.equal(v, b["state"][pid][k]), (pid, k)


def test_a_damaged_checkpoint_is_refused_not_loaded(wine, store) -> None:
    with pytest.raises(ArtifactCorrupted, match="checkpoint is unreadable"):
        Checkpoint.from_bytes(b"\x80\x04not a checkpoint")  # a pickle's first bytes, too
    spec = parse_spec(SPEC)
    good = Trainer(spec, prepare(wine, spec)).checkpoint().to_bytes()
    with pytest.raises(ArtifactCorrupted):
        Checkpoint.from_bytes(good[: len(good) // 2])
