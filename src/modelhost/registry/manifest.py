"""``modelhost.json``: everything needed to rebuild and serve a version besides its weights."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelhost.datasets.preprocessing import NoPreprocessing, Preprocessing

MANIFEST_FILE = "modelhost.json"
WEIGHTS_FILE = "weights.safetensors"
ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
Datatype = Literal["FP32", "FP64", "INT32", "INT64", "BOOL", "BYTES"]


class TensorSpec(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int]
    """-1 marks a variable dimension (the batch)."""


class Signature(BaseModel):
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class Lineage(BaseModel):
    run_id: int | None = None
    dataset: str | None = None
    dataset_sha256: str | None = None
    spec: dict[str, Any] | None = None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format_version: int = 1
    architecture: str
    config: dict[str, Any]
    task: Literal["classification", "binary", "regression", "language_model", "embedding", "custom"]
    """``binary``: one logit (sigmoid); ``custom``: an imported graph whose outputs are returned
    verbatim, by their own names."""
    signature: Signature
    preprocessing: Preprocessing = NoPreprocessing()
    classes: list[int] | list[float] | list[str] | None = None
    """Label of each output index, for classifiers."""
    metrics: dict[str, float] = Field(default_factory=dict)
    confusion_matrix: list[list[int]] | None = None
    """Classifiers: rows are the true class, columns the predicted one (test split, else validation)."""
    lineage: Lineage = Lineage()

    def to_bytes(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True).encode()
