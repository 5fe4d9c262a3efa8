from __future__ import annotations

import pytest

from modelhost.errors import InvalidInput
from modelhost.training.spec import parse_spec


def test_defaults_fill_a_minimal_spec() -> None:
    spec = parse_spec({"dataset": "iris"})
    assert spec.model.architecture == "mlp" and spec.model.hidden_sizes == [128, 64]
    assert spec.optimizer.name == "adam" and spec.optimizer.lr == 1e-3
    assert spec.epochs == 20 and spec.split.validation == 0.2 and spec.split.test == 0.0
    assert spec.task == "classification" and spec.loss.name == "auto" and spec.schedule.name == "constant"
    assert spec.world_size == 1 and spec.checkpoint_every is None and spec.early_stopping is None
    assert spec.model_name == "iris"


def test_yaml_and_json_text_are_accepted() -> None:
    yaml_spec = parse_spec("dataset: wine\nepochs: 3\nmodel: {hidden_sizes: [8]}\nregister_as: w\n")
    json_spec = parse_spec(
        '{"dataset": "wine", "epochs": 3, "model": {"hidden_sizes": [8]}, "register_as": "w"}'
    )
    assert yaml_spec == json_spec and yaml_spec.model_name == "w"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "dataset: Field required"),
        ({"dataset": "d", "epochs": 0}, "epochs: Input should be greater than or equal to 1"),
        ({"dataset": "d", "optimizer": {"lr": 0}}, "optimizer.lr: Input should be greater than 0"),
        (
            {"dataset": "d", "optimizer": {"name": "lbfgs"}},
            "optimizer.name: Input should be 'adam', 'adamw' or 'sgd'",
        ),
        (
            {"dataset": "d", "model": {"architecture": "resnet"}},
            "model: architecture must be one of mlp, cnn, lstm, gru, transformer, gpt",
        ),
        ({"dataset": "d", "model": {"architecture": "cnn", "kernel": 3}}, "model.kernel: unknown field"),
        (
            {"dataset": "d", "model": {"architecture": "transformer", "d_model": 30}},
            "model: Value error, d_model (30) must be a multiple of n_heads (4)",
        ),
        (
            {"dataset": "d", "model": {"architecture": "gpt"}},
            "task language_model goes with architecture gpt",
        ),
        ({"dataset": "d", "task": "regression", "loss": {"name": "bce"}}, "loss bce is for task binary"),
        ({"dataset": "d", "optimizer": {"nesterov": True}}, "nesterov applies to sgd with momentum > 0"),
        ({"dataset": "d", "split": {"validation": 0.5, "test": 0.5}}, "validation + test must leave"),
        ({"dataset": "d", "batch_size": 10, "world_size": 4}, "must be a multiple of world_size"),
        ({"dataset": "d", "schedule": {"name": "linear"}}, "schedule.name: Input should be"),
        ({"dataset": "d", "preprocessing": {"augment": {"flip": 2}}}, "preprocessing.augment.flip"),
        (
            {"dataset": "d", "model": {"hidden_sizes": [0]}},
            "model.hidden_sizes: Value error, every size must be between 1 and 65536",
        ),
        ({"dataset": "d", "learning_rate": 1}, "learning_rate: unknown field"),
        ({"dataset": "d", "validation_split": 1.0}, "split.validation: Input should be less than 1"),
        ({"dataset": "../etc"}, "dataset: Value error, invalid dataset name '../etc'"),
        ({"dataset": "d", "register_as": "a/b"}, "register_as: Value error, invalid model name 'a/b'"),
    ],
)
def test_every_error_names_its_field(spec: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match="invalid spec") as e:
        parse_spec(spec)
    assert message in e.value.message


@pytest.mark.parametrize("text", ["[1, 2]", "dataset: [unclosed", "42"])
def test_text_that_is_not_a_mapping_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="spec"):
        parse_spec(text)


def test_every_architecture_is_configurable_from_a_spec() -> None:
    cases = {
        "cnn": {"channels": [32, 64], "dense": 64, "batch_norm": True},
        "lstm": {"hidden_size": 32, "bidirectional": True},
        "gru": {"num_layers": 2, "pooling": "mean"},
        "transformer": {"d_model": 64, "n_heads": 4, "positions": "sinusoidal"},
    }
    for arch, options in cases.items():
        spec = parse_spec({"dataset": "d", "model": {"architecture": arch, **options}})
        assert spec.model.architecture == arch
        assert spec.model.model_dump(include=set(options)) == options
    gpt = parse_spec(
        {"dataset": "d", "task": "language_model", "model": {"architecture": "gpt", "n_layer": 2}}
    )
    assert gpt.model.n_layer == 2 and gpt.model.block_size == 128


def test_older_spec_fields_stay_valid() -> None:
    spec = parse_spec({"dataset": "d", "validation_split": 0.3, "preprocessing": "none"})
    assert spec.split.validation == 0.3 and spec.preprocessing.scaling == "none"
