"""The training loop on CPU at tiny sizes: a step learns, a seed reproduces, and the version
it packages serves the same answers the loop measured."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load

from modelhost.datasets.formats import parse_csv
from modelhost.datasets.preprocessing import preprocess
from modelhost.datasets.samples import sample_csv
from modelhost.datasets.sources import TableSource
from modelhost.errors import InvalidInput
from modelhost.registry.manifest import WEIGHTS_FILE
from modelhost.serving.runtimes.torch import TorchRuntime
from modelhost.training.data import prepare
from modelhost.training.loop import Cancelled, Trainer, fit
from modelhost.training.package import package
from modelhost.training.spec import parse_spec


@pytest.fixture(scope="module")
def iris():
    data, target = sample_csv("iris")
    return TableSource(parse_csv(data, "iris.csv")), target


def spec(**kw):
    return parse_spec(
        {
            "dataset": "iris",
            "target": "label",
            "epochs": 30,
            "batch_size": 16,
            "model": {"hidden_sizes": [16]},
            "optimizer": {"lr": 0.01},
            **kw,
        }
    )


def never(*_args) -> bool:
    return False


def test_train_step_lowers_the_loss_on_a_fixed_batch(iris) -> None:
    table, _ = iris
    trainer = Trainer(spec(model={"hidden_sizes": [64]}), prepare(table, spec()))
    x, y = trainer.x[:32], trainer.y[:32]
    losses = [trainer.train_step(x, y) for _ in range(150)]
    assert losses[-1] < losses[0] * 0.5


def test_preprocessing_is_fitted_on_the_training_split_only(iris) -> None:
    table, _ = iris
    data = prepare(table, spec())
    assert len(data.x_train) == 120 and len(data.x_val) == 30
    assert np.allclose(data.x_train.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(data.x_train.std(axis=0), 1, atol=1e-4)
    assert not np.allclose(data.x_val.mean(axis=0), 0, atol=1e-3)
    assert data.classes == [0, 1, 2]


def test_fit_learns_iris_and_a_seed_reproduces_it(iris) -> None:
    table, _ = iris
    data = prepare(table, spec())
    a, b = fit(spec(), data, never), fit(spec(), data, never)
    assert a.metrics["val_accuracy"] >= 0.89  # 27+ of 30 held-out flowers; chance is 10
    for (k, va), (_, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(va, vb), k
    c = fit(spec(seed=1), prepare(table, spec(seed=1)), never)
    assert not torch.equal(a.model.state_dict()["net.0.weight"], c.model.state_dict()["net.0.weight"])


def test_progress_callback_cancels(iris) -> None:
    table, _ = iris
    calls = []

    def cancel_on_third(step, total, epoch, metrics) -> bool:
        calls.append(step)
        return len(calls) == 3

    with pytest.raises(Cancelled, match="cancelled at step 3"):
        fit(spec(), prepare(table, spec()), cancel_on_third)


def test_packaged_version_serves_what_the_loop_measured(iris) -> None:
    table, _ = iris
    s, data = spec(), prepare(table, spec())
    result = fit(s, data, never)
    manifest, files = package(s, data, result, run_id=7, dataset_sha256="0" * 64)
    weights = files[WEIGHTS_FILE]
    assert set(load(weights)) == set(result.model.state_dict())
    assert manifest.signature.inputs[0].shape == [-1, 4]
    assert [o.name for o in manifest.signature.outputs] == ["label", "probabilities"]
    runtime = TorchRuntime(manifest, weights)
    raw = table.table.numeric(data.preprocessing.features)  # serving gets raw features
    out = runtime.predict({"input": raw})
    assert out["label"].shape == (150,) and out["probabilities"].shape == (150, 3)
    with torch.inference_mode():
        logits = result.model(torch.from_numpy(preprocess(data.preprocessing, raw)))
    assert (out["label"] == np.array(data.classes)[logits.argmax(-1).numpy()]).all()
    assert np.allclose(out["probabilities"], torch.softmax(logits, -1).numpy(), atol=1e-6)


def test_regression_reports_errors_and_serves_floats() -> None:
    data, _ = sample_csv("wine")
    table = TableSource(parse_csv(data))
    s = parse_spec(
        {
            "dataset": "wine",
            "target": "alcohol",
            "task": "regression",
            "epochs": 150,
            "batch_size": 16,
            "model": {"hidden_sizes": [16]},
            "optimizer": {"lr": 0.01},
        }
    )
    prepared = prepare(table, s)
    result = fit(s, prepared, never)
    assert set(result.metrics) == {"train_loss", "val_loss", "val_mae", "val_rmse", "val_r2"}
    y_val = prepared.y_val
    r2 = 1 - result.metrics["val_rmse"] ** 2 / y_val.var()  # R² is 1 - MSE / variance
    assert result.metrics["val_r2"] == pytest.approx(r2, rel=1e-4) and r2 > 0
    y_val = prepared.y_val
    assert result.metrics["val_rmse"] < y_val.std()  # beats predicting the mean
    manifest, files = package(s, prepared, result, 1, "0" * 64)
    out = TorchRuntime(manifest, files[WEIGHTS_FILE]).predict(
        {"input": table.table.numeric(prepared.preprocessing.features)[:5]}
    )
    assert out["prediction"].dtype == np.float32 and out["prediction"].shape == (5,)


def test_a_single_class_target_is_refused(iris) -> None:
    table, _ = iris
    t = table.table
    one_class = type(t)(t.columns, t.types, [r for r in t.rows if r[-1] == "0"])
    with pytest.raises(InvalidInput, match="single class"):
        prepare(TableSource(one_class), spec())


def test_bf16_mixed_precision_trains_on_a_cpu(iris) -> None:
    table, _ = iris
    s = spec(precision="bf16")
    result = fit(s, prepare(table, s), never)
    assert result.metrics["val_accuracy"] >= 0.85
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # master weights stay fp32


def test_fp16_is_refused_without_cuda(iris) -> None:
    table, _ = iris
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; fp16 is valid here")
    s = spec(precision="fp16")
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        fit(s, prepare(table, s), never)


def test_early_stopping_stops_and_restores_the_best_epoch(iris) -> None:
    table, _ = iris
    s = spec(epochs=200, early_stopping={"metric": "val_loss", "patience": 3}, optimizer={"lr": 0.05})
    result = fit(s, prepare(table, s), never)
    assert result.stopped_early_at is not None and result.stopped_early_at < 200
    assert result.metrics["best_val_loss"] <= result.metrics["val_loss"]
