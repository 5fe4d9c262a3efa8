from __future__ import annotations

import pytest

from modelhost.errors import InvalidInput
from modelhost.training.spec import parse_spec


def test_defaults_fill_a_minimal_spec() -> None:
    spec = parse_spec({"dataset": "iris"})
    assert spec.model.architecture == "mlp" and spec.model.hidden_sizes == [128, 64]
    assert spec.optimizer.name == "adam" and spec.optimizer.lr == 1e-3
    assert spec.epochs == 20 and spec.validation_split == 0.2
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
        ({"dataset": "d", "model": {"architecture": "resnet"}}, "model.architecture: Input should be 'mlp'"),
        (
            {"dataset": "d", "model": {"hidden_sizes": [0]}},
            "model.hidden_sizes: Value error, every hidden size",
        ),
        ({"dataset": "d", "learning_rate": 1}, "learning_rate: unknown field"),
        ({"dataset": "d", "validation_split": 1.0}, "validation_split: Input should be less than 1"),
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
