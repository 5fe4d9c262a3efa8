"""The onnx runtime: a version's ONNX graph under onnxruntime on CPU.

Two kinds of version run here. A modelhost version (exported from its module) gets the
same preprocessing before the graph and the same named outputs after it as the torch
runtime. An imported graph (architecture ``onnx``) takes its inputs and returns its outputs
by their graph names, untouched apart from a cast to the dtype each input is declared as.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from modelhost.datasets.preprocessing import preprocess
from modelhost.errors import InvalidInput
from modelhost.registry.manifest import Manifest
from modelhost.registry.onnx_export import LOGITS
from modelhost.registry.onnx_import import refuse_external_data
from modelhost.serving.runtimes.base import Runtime
from modelhost.serving.runtimes.outputs import ClassifierOutputs

_NUMPY_DTYPES: dict[str, type] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


def session_options() -> ort.SessionOptions:
    """Low latency for one request at a time: every graph optimisation, nodes run in order,
    the intra-op pool as wide as torch's (so both runtimes use the same cores)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: no per-run warnings in the server log
    return opts


def _text(name: str, value: object) -> str:
    if not isinstance(value, bytes):
        return str(value)
    try:
        return value.decode()
    except UnicodeDecodeError as e:
        raise InvalidInput(
            f"input {name!r}: string tensors must be UTF-8 ({e.reason} at byte {e.start})"
        ) from e


def _cast(name: str, x: np.ndarray, dtype: type) -> np.ndarray:
    if dtype is np.object_:  # onnxruntime wants str elements (it would stringify bytes as "b'..'")
        text: np.ndarray = np.vectorize(lambda v: _text(name, v), otypes=[object])(x)
        return text
    return np.ascontiguousarray(x, dtype=dtype)


class OnnxRuntime(Runtime):
    """``session.run`` is thread-safe, so replicas share one InferenceSession."""

    name = "onnx"

    def __init__(self, manifest: Manifest, model: bytes) -> None:
        self.manifest = manifest
        # checked again here, for versions imported before the import checked model functions too
        refuse_external_data(onnx.load_model_from_string(model), "model.onnx")
        self.session = ort.InferenceSession(model, session_options(), providers=["CPUExecutionProvider"])
        self._imported = manifest.architecture == "onnx"
        self._input = manifest.signature.inputs[0].name
        self._outputs_of = ClassifierOutputs(manifest)
        self._dtypes = {i.name: _NUMPY_DTYPES.get(i.type, np.float32) for i in self.session.get_inputs()}
        self._outputs = [o.name for o in self.session.get_outputs()]
        self._chunk = _fixed_batch(self.session)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._imported:
            x = preprocess(self.manifest.preprocessing, inputs[self._input])  # float32
            # token ids: the graph takes them as int64 (a no-op cast for float graphs)
            (logits,) = self._run([LOGITS], {self._input: _cast(self._input, x, self._dtypes[self._input])})
            return self._outputs_of(logits)
        missing = [name for name in self._dtypes if name not in inputs]
        if missing:
            raise InvalidInput(f"missing input {missing[0]!r}; the model takes {', '.join(self._dtypes)}")
        feeds = {name: _cast(name, inputs[name], dtype) for name, dtype in self._dtypes.items()}
        return dict(zip(self._outputs, self._run_batched(feeds), strict=True))

    def _run_batched(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """A graph declared with a fixed batch (often 1) runs the batch in slices of that size."""
        rows = len(next(iter(feeds.values())))
        if self._chunk is None or rows == self._chunk:
            return self._run(self._outputs, feeds)
        parts = [
            self._run(self._outputs, {k: v[i : i + self._chunk] for k, v in feeds.items()})
            for i in range(0, rows, self._chunk)
        ]
        return [np.concatenate(outs) for outs in zip(*parts, strict=True)]

    def _run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self.session.run(outputs, feeds)  # type: ignore[no-any-return]
        except InvalidArgument as e:  # shapes the signature allows but the graph refuses
            raise InvalidInput(f"the model refused the input: {e}") from e


def _fixed_batch(session: ort.InferenceSession) -> int | None:
    """The first dimension every input declares as the same fixed size, else None."""
    firsts = {i.shape[0] if i.shape else None for i in session.get_inputs()}
    (first,) = firsts if len(firsts) == 1 else (None,)
    return first if isinstance(first, int) and first > 0 else None
