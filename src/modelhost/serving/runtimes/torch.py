"""The torch runtime: a version's own module under ``torch.inference_mode``, with the
version's saved preprocessing applied inside, so clients send raw features."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load

from modelhost.nn import build_model
from modelhost.registry.manifest import Manifest
from modelhost.serving.runtimes.base import Runtime
from modelhost.serving.runtimes.outputs import classifier_outputs
from modelhost.datasets.preprocessing import preprocess


def set_threads(n: int) -> None:
    """Intra-op threads for every served model in this process (torch's setting is global)."""
    torch.set_num_threads(n)


class TorchRuntime(Runtime):
    """Weights from safetensors (never pickle) in the architecture the manifest names."""

    name = "torch"

    def __init__(self, manifest: Manifest, weights: bytes) -> None:
        self.manifest = manifest
        self.model = build_model(manifest.architecture, manifest.config)
        self.model.load_state_dict(load(weights), strict=True)
        self.model.eval()
        self._input = manifest.signature.inputs[0].name

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = preprocess(self.manifest.preprocessing, inputs[self._input])
        with torch.inference_mode():
            out = self.model(torch.from_numpy(x)).numpy()
        return classifier_outputs(self.manifest, out)
