"""KServe v1 / TF Serving ``:predict`` bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class PredictRequest(BaseModel):
    instances: list[Any]


class PredictResponse(BaseModel):
    predictions: list[Any]
    model_name: str
    model_version: str
