"""The baseline: the model server a user writes by hand with FastAPI + uvicorn.

A pydantic body, an ``async def`` endpoint that runs the model inline under
``torch.inference_mode`` (on a 2-core machine this beats a sync ``def`` endpoint, whose
thread-pool hop costs more than a small model's forward pass), no auth, no batching.
It answers what modelhost's ``:predict`` answers for a classifier: each row's label.

    python bench/baseline_fastapi.py --arch cnn --config '{"in_channels": 1}' \
        --weights w.safetensors --port 8001
"""

from __future__ import annotations

import argparse
import json

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from safetensors.torch import load_file

from modelhost.nn import build_model  # the same module code modelhost serves


class Body(BaseModel):
    instances: list[list[float]]


def create_app(model: torch.nn.Module) -> FastAPI:
    app = FastAPI()

    @app.post("/predict")
    async def predict(body: Body) -> dict[str, list[int]]:
        with torch.inference_mode():
            logits = model(torch.tensor(body.instances, dtype=torch.float32))
        if logits.shape[-1] == 1:  # a binary classifier's one logit: class 1 when sigmoid > 0.5
            return {"predictions": (logits[:, 0] > 0).long().tolist()}
        return {"predictions": logits.softmax(-1).argmax(-1).tolist()}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", required=True)
    parser.add_argument("--config", required=True, help="the architecture's config, as JSON")
    parser.add_argument("--weights", required=True, help="a .safetensors file")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    model = build_model(args.arch, json.loads(args.config))
    model.load_state_dict(load_file(args.weights), strict=True)
    model.eval()
    uvicorn.run(create_app(model), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
