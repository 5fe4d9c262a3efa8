"""The torch runtime: a version's own module under ``torch.inference_mode``, with the
version's saved preprocessing applied inside, so clients send raw features.

A module whose forward is a fixed sequence of tensor operations (the architectures in
``TRACEABLE``) runs as a TorchScript trace of itself: the same operations on the same
weights, checked against the module when loaded. The trace's interpreter takes the GIL once
per forward pass, where the module takes it back after every operation; on a server whose
event loop holds the GIL much of the time, each of those hand-backs is a wait.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from safetensors.torch import load

from modelhost.datasets.preprocessing import preprocess
from modelhost.nn import build_model
from modelhost.registry.manifest import Manifest
from modelhost.serving.runtimes.base import Runtime
from modelhost.serving.runtimes.outputs import ClassifierOutputs

log = logging.getLogger("modelhost.serving")

TRACEABLE: dict[str, Callable[[Any], int]] = {
    "mlp": lambda c: c.in_features,
    "cnn": lambda c: c.in_channels * c.image_size**2,
}
"""Architectures with no data-dependent control flow, and the width of the flat float rows
(N, width) their trace takes; other inputs run on the module itself."""


def set_threads(n: int) -> None:
    """Intra-op threads for every served model in this process (torch's setting is global)."""
    torch.set_num_threads(n)


def trace(module: torch.nn.Module, width: int) -> torch.jit.ScriptModule | None:
    """A TorchScript trace of ``module`` for (N, width) float32 rows, or None if tracing fails
    or the trace disagrees with the module on a batch of another size."""
    example, check = torch.rand(2, width), torch.rand(3, width)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            # TracerWarning: the module's own shape checks become constants in the trace; the
            # trace only ever gets rows of the width it was made for
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, example, check_trace=False)  # type: ignore[no-untyped-call]
            same = torch.allclose(traced(check), module(check), rtol=1e-5, atol=1e-6)
    except Exception as e:  # a module tracing cannot follow runs as it is
        log.warning("serving %s untraced: %s: %s", type(module).__name__, type(e).__name__, e)
        return None
    return traced if same else None


class TorchRuntime(Runtime):
    """Weights from safetensors (never pickle) in the architecture the manifest names."""

    name = "torch"

    def __init__(self, manifest: Manifest, weights: bytes) -> None:
        self.manifest = manifest
        self.model = build_model(manifest.architecture, manifest.config)
        self.model.load_state_dict(load(weights), strict=True)
        self.model.eval()
        self._input = manifest.signature.inputs[0].name
        self._outputs_of = ClassifierOutputs(manifest)
        flat_width = TRACEABLE.get(manifest.architecture)
        self._width = flat_width(self.model.config) if flat_width else None
        self.traced = trace(self.model, self._width) if self._width else None

    def bind_thread(self) -> None:
        # torch's thread count is process-wide for its own pool, but OpenMP and MKL keep one
        # per calling thread: a new thread would fan out as wide as the machine, and the idle
        # workers of that team spin on the cores the event loop needs.
        torch.set_num_threads(torch.get_num_threads())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's forward pass as this runtime runs it (the trace where it applies)."""
        if self.traced is not None and x.dim() == 2 and x.shape[1] == self._width and x.is_floating_point():
            out: torch.Tensor = self.traced(x)
            return out
        out = self.model(x)
        return out

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = preprocess(self.manifest.preprocessing, inputs[self._input])
        with torch.inference_mode():
            out = self.forward(torch.from_numpy(x)).numpy()
        return self._outputs_of(out)
