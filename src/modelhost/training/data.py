"""From a parsed table and a spec to tensors: feature selection, label encoding, a seeded
train/validation split, and preprocessing fitted on the training split only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelhost.datasets.formats import Table
from modelhost.errors import InvalidInput
from modelhost.registry.manifest import Preprocessing
from modelhost.training.spec import TrainSpec


@dataclass
class PreparedData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    preprocessing: Preprocessing
    classes: list[int] | list[float] | list[str] | None


def _classes(values: list[str], kind: str) -> tuple[list[str], list[int] | list[float] | list[str]]:
    """The sorted distinct labels as they appear in the file, and as the target's own type."""
    uniq = set(values)
    if kind == "str":
        names = sorted(uniq)
        return names, names
    names = sorted(uniq, key=float)
    return names, [int(v) for v in names] if kind == "int" else [float(v) for v in names]


def apply_preprocessing(p: Preprocessing, x: np.ndarray) -> np.ndarray:
    """The transform serving applies too, so training and serving never drift apart."""
    if x.dtype.kind in "iub":  # token ids and flags pass through exactly
        return x
    if p.kind == "standardize" and p.mean is not None and p.std is not None:
        return ((x - np.asarray(p.mean, np.float32)) / np.asarray(p.std, np.float32)).astype(np.float32)
    return x.astype(np.float32, copy=False)


def prepare(table: Table, spec: TrainSpec) -> PreparedData:
    target = spec.target
    assert target is not None, "submit_run resolves the target"
    types = dict(zip(table.columns, table.types, strict=True))
    features = spec.features or [c for c in table.columns if c != target and types[c] != "str"]
    if not features:
        raise InvalidInput("features: the dataset has no numeric feature columns")
    x = table.numeric(features)
    raw_y = table.column(target)
    classes = None
    if spec.task == "classification":
        names, classes = _classes(raw_y, types[target])
        if len(names) < 2:
            raise InvalidInput(
                f"target: column {target!r} has a single class; classification needs two or more"
            )
        if len(names) > 10_000:
            raise InvalidInput(
                f"target: column {target!r} has {len(names)} classes; is it a regression target?"
            )
        index = {c: i for i, c in enumerate(names)}
        y = np.array([index[v] for v in raw_y], dtype=np.int64)
    else:
        y = np.array([float(v) for v in raw_y], dtype=np.float32)
    order = np.random.default_rng(spec.seed).permutation(len(x))
    n_val = round(len(x) * spec.validation_split)
    if len(x) - n_val < 1:
        raise InvalidInput("validation_split leaves no training rows")
    val, train = order[:n_val], order[n_val:]
    prep = Preprocessing(kind=spec.preprocessing, features=features)
    if spec.preprocessing == "standardize":
        mean, std = x[train].mean(axis=0), x[train].std(axis=0)
        std[std < 1e-8] = 1.0  # constant columns pass through instead of dividing by zero
        prep = prep.model_copy(update={"mean": mean.tolist(), "std": std.tolist()})
    x = apply_preprocessing(prep, x)
    return PreparedData(x[train], y[train], x[val], y[val], prep, classes)
