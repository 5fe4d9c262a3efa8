"""The training spec: what a run trains, on what, and how. Validated by pydantic; every
error names the field (``optimizer.lr: Input should be greater than 0``)."""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from modelhost.errors import InvalidInput, describe_validation_errors
from modelhost.names import check_name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ModelSpec(_Strict):
    architecture: Literal["mlp"] = "mlp"
    """Registered architecture name (more arrive with the training engine)."""
    hidden_sizes: list[int] = Field(default_factory=lambda: [128, 64], max_length=16)
    """Width of each hidden layer."""
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @field_validator("hidden_sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(h < 1 or h > 65536 for h in v):
            raise ValueError("every hidden size must be between 1 and 65536")
        return v


class OptimizerSpec(_Strict):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    """Used by SGD only."""


class TrainSpec(_Strict):
    name: str | None = None
    """Run name; defaults to the model name."""
    dataset: str
    """Name of an uploaded dataset."""
    target: str | None = None
    """Target column; defaults to the dataset's own target."""
    features: list[str] | None = None
    """Feature columns; default every numeric column but the target."""
    task: Literal["classification", "regression"] = "classification"
    preprocessing: Literal["standardize", "none"] = "standardize"
    """Fitted on the training split only and saved with the version, so serving applies the same."""
    model: ModelSpec = Field(default_factory=ModelSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    epochs: int = Field(20, ge=1, le=100_000)
    batch_size: int = Field(64, ge=1, le=1_000_000)
    validation_split: float = Field(0.2, ge=0.0, lt=1.0)
    seed: int = 0
    register_as: str | None = None
    """Model name the result is registered under; defaults to the dataset name."""

    @field_validator("name", "register_as", "dataset")
    @classmethod
    def _names(cls, v: str | None, info: ValidationInfo) -> str | None:
        kind = {"dataset": "dataset", "register_as": "model", "name": "run"}[info.field_name or "name"]
        try:
            return v if v is None else check_name(kind, v)
        except InvalidInput as e:  # re-raised as a field error, so the message names the field
            raise ValueError(e.message) from None

    @property
    def model_name(self) -> str:
        return self.register_as or self.dataset


def parse_spec(data: dict[str, Any] | str | bytes) -> TrainSpec:
    """A TrainSpec from a dict, or YAML/JSON text. InvalidInput names each bad field."""
    if isinstance(data, str | bytes):
        try:
            data = yaml.safe_load(data)
        except yaml.YAMLError as e:
            raise InvalidInput(f"spec is not valid YAML or JSON: {e}") from e
    if not isinstance(data, dict):
        raise InvalidInput("spec must be a mapping with at least a 'dataset' field")
    try:
        return TrainSpec.model_validate(data)
    except ValidationError as e:
        raise InvalidInput("invalid spec: " + describe_validation_errors(e.errors())) from e
