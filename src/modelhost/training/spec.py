"""The training spec: what a run trains, on what, and how. Validated by pydantic; every
error names the field (``optimizer.lr: Input should be greater than 0``).

Sizes the data decides (input features, classes, vocabulary, channels) are not in the
spec: the trainer reads them off the prepared data and writes them into the version's
config, so a spec stays the same when a dataset gains a column or a class.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from modelhost.datasets.images import AugmentSpec
from modelhost.errors import InvalidInput, describe_validation_errors
from modelhost.names import check_name

Task = Literal["classification", "binary", "regression", "language_model"]
"""``binary``: one logit, sigmoid + BCE; ``language_model``: next-token prediction on text."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def _widths(v: list[int]) -> list[int]:
    if any(h < 1 or h > 65536 for h in v):
        raise ValueError("every size must be between 1 and 65536")
    return v


class MLPSpec(_Strict):
    architecture: Literal["mlp"] = "mlp"
    hidden_sizes: list[int] = Field(default_factory=lambda: [128, 64], max_length=16)
    """Width of each hidden layer."""
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    _check = field_validator("hidden_sizes")(_widths)


class CNNSpec(_Strict):
    architecture: Literal["cnn"]
    channels: list[int] = Field(default_factory=lambda: [32, 64], min_length=1, max_length=8)
    """Output channels of each conv → pool block (the classic MNIST network: [32, 64])."""
    kernel_size: Literal[3, 5, 7] = 3
    dense: int = Field(64, ge=0, le=65536)
    """Width of the hidden dense layer; 0 for none."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    batch_norm: bool = False
    _check = field_validator("channels")(_widths)


class RNNSpec(_Strict):
    architecture: Literal["lstm", "gru"]
    hidden_size: int = Field(64, ge=1, le=8192)
    num_layers: int = Field(1, ge=1, le=16)
    bidirectional: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    embed_dim: int = Field(64, ge=1, le=8192)
    """Token embedding width, for text input."""
    pooling: Literal["last", "mean"] = "last"


class TransformerSpec(_Strict):
    architecture: Literal["transformer"]
    d_model: int = Field(128, ge=8, le=8192)
    n_heads: int = Field(4, ge=1, le=128)
    n_layers: int = Field(2, ge=1, le=64)
    d_ff: int = Field(256, ge=1, le=65536)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    positions: Literal["learned", "sinusoidal"] = "learned"
    pooling: Literal["mean", "cls"] = "mean"

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerSpec:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        return self


class GPTSpec(_Strict):
    architecture: Literal["gpt"]
    block_size: int = Field(128, ge=2, le=32768)
    """Longest context, in tokens; the text is cut into windows of this length."""
    n_layer: int = Field(4, ge=1, le=96)
    n_head: int = Field(4, ge=1, le=128)
    n_embd: int = Field(128, ge=8, le=16384)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    bias: bool = True

    @model_validator(mode="after")
    def _heads_divide(self) -> GPTSpec:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        return self


def _architecture(v: Any) -> str:
    raw = v.get("architecture", "mlp") if isinstance(v, dict) else getattr(v, "architecture", "mlp")
    return "rnn" if raw in ("lstm", "gru") else str(raw)


ModelSpec = Annotated[
    Annotated[MLPSpec, Tag("mlp")]
    | Annotated[CNNSpec, Tag("cnn")]
    | Annotated[RNNSpec, Tag("rnn")]
    | Annotated[TransformerSpec, Tag("transformer")]
    | Annotated[GPTSpec, Tag("gpt")],
    Discriminator(
        _architecture,
        custom_error_type="architecture",
        custom_error_message="architecture must be one of mlp, cnn, lstm, gru, transformer, gpt",
    ),
]


class OptimizerSpec(_Strict):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    """SGD only."""
    nesterov: bool = False
    """SGD only; needs momentum > 0."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam and AdamW only."""

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimizerSpec:
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise ValueError("nesterov applies to sgd with momentum > 0")
        return self


class LossSpec(_Strict):
    name: Literal["auto", "cross_entropy", "bce", "mse", "mae"] = "auto"
    """``auto``: cross entropy for classification and language models, BCE for binary, MSE for regression."""
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    """Cross entropy only."""


class ScheduleSpec(_Strict):
    name: Literal["constant", "step", "cosine", "plateau"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    """Linear warmup from 0 over this many steps (step and cosine)."""
    step_size: int = Field(1, ge=1)
    """step: multiply the rate by ``gamma`` every ``step_size`` epochs."""
    gamma: float = Field(0.1, gt=0, le=1)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    """cosine: the rate decays to ``lr * min_lr_ratio`` at the last step."""
    factor: float = Field(0.1, gt=0, lt=1)
    """plateau: multiply the rate by ``factor`` ..."""
    patience: int = Field(2, ge=0)
    """plateau: ... after this many epochs without improvement of the monitored metric."""


class EarlyStoppingSpec(_Strict):
    metric: str = "val_loss"
    """An epoch metric, e.g. val_loss, val_accuracy, val_f1, val_r2."""
    mode: Literal["auto", "min", "max"] = "auto"
    """``auto``: min for losses and errors, max for the rest."""
    patience: int = Field(3, ge=1)
    """Epochs without improvement before the run stops."""
    min_delta: float = Field(0.0, ge=0)
    restore_best: bool = True
    """Register the weights of the best epoch, not the last."""


class PreprocessingSpec(_Strict):
    scaling: Literal["standardize", "minmax", "none"] = "standardize"
    """Numeric columns; fitted on the training split only and saved with the version."""
    categorical: list[str] = Field(default_factory=list)
    """Text columns one-hot encoded (tables); categories come from the training split."""
    image_size: int | None = Field(None, ge=4, le=1024)
    """Images are resized to this square size (default: the largest side seen in training)."""
    channels: Literal[1, 3] | None = None
    """1 (grey) or 3 (RGB); default: what the training images are."""
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    """Image augmentation, on while training only."""
    tokenizer: Literal["char", "bpe"] = "char"
    """Text input: character-level, or BPE trained on the training split."""
    vocab_size: int | None = Field(None, ge=16, le=262_144)
    """Vocabulary size, special tokens included: BPE trains this many (default 4096, at least
    260); char keeps the most frequent characters (default: all)."""
    max_length: int = Field(128, ge=1, le=32768)
    """Text classification: token sequences are padded or cut to this length."""


class SplitSpec(_Strict):
    validation: float = Field(0.2, ge=0.0, lt=1.0)
    test: float = Field(0.0, ge=0.0, lt=1.0)
    seed: int | None = None
    """Default: the run's seed."""
    validation_dataset: str | None = None
    """A dataset of the same kind used whole as the validation split (``validation`` is then unused)."""
    test_dataset: str | None = None
    """A dataset of the same kind used whole as the test split (``test`` is then unused)."""

    @field_validator("validation_dataset", "test_dataset")
    @classmethod
    def _dataset_names(cls, v: str | None) -> str | None:
        try:
            return v if v is None else check_name("dataset", v)
        except InvalidInput as e:
            raise ValueError(e.message) from None

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> SplitSpec:
        if self.validation + self.test >= 1.0:
            raise ValueError("validation + test must leave a training share (sum below 1)")
        return self


class TrainSpec(_Strict):
    name: str | None = None
    """Run name; defaults to the model name."""
    dataset: str
    """Name of an uploaded dataset."""
    target: str | None = None
    """Target column (tables) or array (NPZ); defaults to the dataset's own target."""
    features: list[str] | None = None
    """Feature columns; default: every column but the target."""
    task: Task = "classification"
    preprocessing: PreprocessingSpec = Field(default_factory=PreprocessingSpec)
    model: ModelSpec = Field(default_factory=MLPSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    loss: LossSpec = Field(default_factory=LossSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    early_stopping: EarlyStoppingSpec | None = None
    grad_clip: float | None = Field(None, gt=0)
    """Clip the global gradient norm to this value."""
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    """Mixed precision: bf16 autocast on CPUs that support it, fp16 with loss scaling on CUDA;
    ``auto`` picks the fastest the device supports."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    epochs: int = Field(20, ge=1, le=100_000)
    batch_size: int = Field(64, ge=1, le=1_000_000)
    split: SplitSpec = Field(default_factory=SplitSpec)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    checkpoint_every: int | None = Field(None, ge=1)
    """Steps between checkpoints; default: at the end of every epoch."""
    world_size: int = Field(1, ge=1, le=64)
    """Data-parallel processes (DDP: gloo on CPU, NCCL on CUDA)."""
    register_as: str | None = None
    """Model name the result is registered under; defaults to the dataset name."""

    @model_validator(mode="before")
    @classmethod
    def _legacy_fields(cls, data: Any) -> Any:
        # `validation_split` and a bare `preprocessing: standardize` came first; they stay valid
        if isinstance(data, dict):
            data = dict(data)
            if "validation_split" in data:
                split = dict(data.get("split") or {})
                split.setdefault("validation", data.pop("validation_split"))
                data["split"] = split
            if isinstance(data.get("preprocessing"), str):
                data["preprocessing"] = {"scaling": data["preprocessing"]}
        return data

    @field_validator("name", "register_as", "dataset")
    @classmethod
    def _names(cls, v: str | None, info: ValidationInfo) -> str | None:
        kind = {"dataset": "dataset", "register_as": "model", "name": "run"}[info.field_name or "name"]
        try:
            return v if v is None else check_name(kind, v)
        except InvalidInput as e:  # re-raised as a field error, so the message names the field
            raise ValueError(e.message) from None

    @model_validator(mode="after")
    def _consistent(self) -> TrainSpec:
        arch = self.model.architecture
        if (self.task == "language_model") != (arch == "gpt"):
            raise ValueError("task language_model goes with architecture gpt, and gpt with language_model")
        loss = self.loss.name
        if loss in ("mse", "mae") and self.task != "regression":
            raise ValueError(f"loss {loss} is for regression; task is {self.task}")
        if loss == "bce" and self.task != "binary":
            raise ValueError(f"loss bce is for task binary; task is {self.task}")
        if loss == "cross_entropy" and self.task in ("binary", "regression"):
            raise ValueError(f"loss cross_entropy is for classification; task is {self.task}")
        if self.batch_size % self.world_size:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of world_size")
        return self

    @property
    def model_name(self) -> str:
        return self.register_as or self.dataset

    @property
    def validation_split(self) -> float:
        return self.split.validation


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
        # the union's tags (model.cnn.channels) mean nothing to the user: model.channels
        tags = ("mlp", "cnn", "rnn", "transformer", "gpt")
        raise InvalidInput("invalid spec: " + describe_validation_errors(e.errors(), skip=tags)) from e
