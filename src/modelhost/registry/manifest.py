"""``modelhost.json``: everything needed to rebuild and serve a version besides its weights."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_FILE = "modelhost.json"
WEIGHTS_FILE = "weights.safetensors"
ONNX_FILE = "model.onnx"
Datatype = Literal["FP32", "FP64", "INT32", "INT64", "BOOL", "BYTES"]


class TensorSpec(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int]
    """-1 marks a variable dimension (the batch)."""


class Signature(BaseModel):
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class Preprocessing(BaseModel):
    kind: Literal["standardize", "none"] = "none"
    features: list[str] = Field(default_factory=list)
    mean: list[float] | None = None
    std: list[float] | None = None


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
    task: Literal["classification", "regression", "custom"]
    """``custom``: an imported graph whose outputs are returned verbatim, by their own names."""
    signature: Signature
    preprocessing: Preprocessing = Preprocessing()
    classes: list[int] | list[float] | list[str] | None = None
    """Label of each output index, for classifiers."""
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: Lineage = Lineage()

    def to_bytes(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True).encode()
