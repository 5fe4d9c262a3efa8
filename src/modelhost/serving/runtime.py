"""The torch runtime: a version's own module under ``torch.inference_mode``, with the
version's saved preprocessing applied inside, so clients send raw features."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load

from modelhost.nn import build_model
from modelhost.registry.manifest import Manifest
from modelhost.training.data import apply_preprocessing


class TorchRuntime:
    """Loads weights (safetensors, never pickle) into the architecture named by the manifest.

    ``predict`` maps a float32 (N, F) array to named output arrays, N rows each.
    """

    def __init__(self, manifest: Manifest, weights: bytes) -> None:
        self.manifest = manifest
        self.model = build_model(manifest.architecture, manifest.config)
        self.model.load_state_dict(load(weights), strict=True)
        self.model.eval()

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        m = self.manifest
        with torch.inference_mode():
            out = self.model(torch.from_numpy(apply_preprocessing(m.preprocessing, x)))
        if m.task == "regression" or not m.classes:
            return {"prediction": out.squeeze(-1).numpy().astype(np.float32)}
        probs = torch.softmax(out, dim=-1).numpy()
        labels = np.asarray(m.classes)[probs.argmax(axis=-1)]
        if len(labels) != len(x):
            raise RuntimeError(f"model returned {len(labels)} rows for {len(x)} inputs")
        return {"label": labels, "probabilities": probs.astype(np.float32)}
