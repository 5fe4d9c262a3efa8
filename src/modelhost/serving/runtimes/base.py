"""The runtime interface: a loaded model version that maps a batch of named input arrays
to named output arrays. Backends: torch (the version's own module), onnx (onnxruntime)."""

from __future__ import annotations

import abc

import numpy as np

from modelhost.registry.manifest import Manifest


class Runtime(abc.ABC):
    """One loaded model version.

    ``predict`` may be called from several serving threads at once (one per replica), with a
    batch: every input array has the same first dimension N (raw values: the version's own
    preprocessing is applied inside), and every output array it returns has N rows too.
    """

    name: str
    manifest: Manifest
    batched: bool = True
    """False for runtimes that schedule their own work (the LLM engine): no batcher is started."""

    @abc.abstractmethod
    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. Raises on model failure; never returns fewer or more rows."""

    def bind_thread(self) -> None:  # noqa: B027  # a hook: most runtimes need nothing here
        """Called once in each serving thread before its first ``predict``, for settings a
        math library keeps per calling thread. Does nothing by default."""
