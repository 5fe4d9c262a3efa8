"""Sweeps expand a spec into one validated spec per trial and pick the best by a metric."""

from __future__ import annotations

import pytest

from modelhost.errors import InvalidInput
from modelhost.training.sweeps import SweepSpec, best, expand, points

BASE = {"dataset": "iris", "epochs": 2, "model": {"hidden_sizes": [8]}}


def test_grid_tries_every_combination_once() -> None:
    sweep = SweepSpec(space={"optimizer.lr": [0.1, 0.01], "model.hidden_sizes": [[8], [16, 8], [32]]})
    trials = expand(BASE, sweep)
    assert len(trials) == 6
    seen = {(s.optimizer.lr, tuple(s.model.hidden_sizes)) for _, s in trials}
    assert len(seen) == 6
    assert [s.name for _, s in trials][:2] == ["iris-trial-1", "iris-trial-2"]
    assert all(s.epochs == 2 for _, s in trials)  # the rest of the spec is kept


def test_random_search_is_seeded_and_respects_ranges() -> None:
    sweep = SweepSpec(
        method="random",
        trials=20,
        seed=3,
        space={
            "optimizer.lr": {"low": 1e-4, "high": 1e-1, "log": True},
            "batch_size": {"low": 8, "high": 64},
        },
    )
    a, b = points(sweep), points(sweep)
    assert a == b and len(a) == 20
    assert all(1e-4 <= p["optimizer.lr"] <= 1e-1 for p in a)
    assert all(isinstance(p["batch_size"], int) and 8 <= p["batch_size"] <= 64 for p in a)
    assert len({p["optimizer.lr"] for p in a}) == 20
    assert points(sweep.model_copy(update={"seed": 4})) != a


def test_a_bad_trial_is_refused_naming_the_trial_and_field() -> None:
    sweep = SweepSpec(space={"optimizer.lr": [0.01, -1.0]})
    with pytest.raises(InvalidInput, match=r"sweep trial 2 .*optimizer.lr: Input should be greater than 0"):
        expand(BASE, sweep)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"optimizer.lr": []}, "at least one value"),
        ({"optimizer.lr": {"low": 1, "high": 0}}, "must be below high"),
    ],
)
def test_bad_spaces_are_refused(space, message) -> None:
    with pytest.raises(ValueError, match=message):
        SweepSpec(method="random", trials=2, space=space)


def test_best_follows_the_metric_direction() -> None:
    values = {1: 0.5, 2: 0.2, 3: None, 4: 0.9}
    assert best(values, SweepSpec(space={"seed": [0]}, metric="val_loss")) == 2
    assert best(values, SweepSpec(space={"seed": [0]}, metric="val_accuracy")) == 4
    assert best({1: None}, SweepSpec(space={"seed": [0]})) is None
