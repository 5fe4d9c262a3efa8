"""A modelhost version as an ONNX graph, for the onnx runtime.

The graph is the raw module only: the signature's first input (raw name, batch axis
dynamic) in, ``logits`` out. The version's preprocessing and the softmax/labels stay
outside it and are applied by the runtime exactly as the torch runtime applies them, so the
two runtimes differ only in what runs the module.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
from safetensors.torch import load
from torch import nn
from torch.jit import TracerWarning  # type: ignore[attr-defined]  # public, not in torch.jit.__all__

from modelhost.errors import InvalidInput, LoadFailed
from modelhost.nn import build_model
from modelhost.registry.manifest import Manifest, TensorSpec

LOGITS = "logits"
OPSET = 17
_TORCH_DTYPES = {
    "FP32": torch.float32,
    "FP64": torch.float64,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
}


def export_onnx(manifest: Manifest, weights: bytes) -> bytes:
    """The version's module with ``weights`` loaded, as ONNX bytes (opset 17).

    The graph is checked against the module on an input of other dynamic sizes than the
    traced one. Raises InvalidInput for a version that is not a modelhost architecture (an
    imported graph already is ONNX) or whose input cannot be traced (BYTES), and LoadFailed
    when the exported graph does not compute what the module computes.
    """
    if manifest.architecture == "onnx":
        raise InvalidInput("this version is an imported ONNX graph; it has nothing to export")
    spec = manifest.signature.inputs[0]
    if spec.datatype not in _TORCH_DTYPES:
        raise InvalidInput(f"input {spec.name!r} of type {spec.datatype} cannot be exported to ONNX")
    model = build_model(manifest.architecture, manifest.config)
    model.load_state_dict(load(weights), strict=True)
    model.eval()
    data = _trace(model, spec)
    onnx.checker.check_model(onnx.load_model_from_string(data))
    _check_against_module(model, spec, data)
    return data


def _example(spec: TensorSpec, variable: int) -> torch.Tensor:
    """An input of the signature's shape with ``variable`` for every -1; ids are 0 or 1, valid
    for any vocabulary."""
    shape = [variable if d == -1 else d for d in spec.shape]
    gen = torch.Generator().manual_seed(0)
    if spec.datatype in ("FP32", "FP64"):
        return torch.randn(shape, generator=gen, dtype=_TORCH_DTYPES[spec.datatype])
    return torch.randint(0, 2, shape, generator=gen).to(_TORCH_DTYPES[spec.datatype])


def _trace(model: nn.Module, spec: TensorSpec) -> bytes:
    # A size of 2, not 1: the tracer may specialise a dimension of size 1 away.
    example = _example(spec, 2)
    dynamic = {i: "batch" if i == 0 else f"dim{i}" for i, d in enumerate(spec.shape) if d == -1}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter (dynamo=False) is deprecated from torch 2.9 and says so on
        # every call, once itself and once from an internal helper; the dynamo exporter would
        # need onnxscript. TracerWarnings (shape checks in model and torch code read as Python
        # values) and the exporter's note on batched LSTM/GRU say the trace *might* not hold
        # for other sizes: _check_against_module runs other sizes and fails loudly if not.
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore", "The feature will be removed", DeprecationWarning, r"torch\.onnx\._internal"
        )
        warnings.filterwarnings("ignore", category=TracerWarning)
        warnings.filterwarnings(
            "ignore", "Exporting a model to ONNX with a batch_size other than 1", UserWarning, r"torch\.onnx"
        )
        torch.onnx.export(
            model,
            (example,),
            buf,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects too
            dynamo=False,
            opset_version=OPSET,
            input_names=[spec.name],
            output_names=[LOGITS],
            dynamic_axes={spec.name: dynamic, LOGITS: {0: "batch"}},
        )
    return buf.getvalue()


def _check_against_module(model: nn.Module, spec: TensorSpec, data: bytes) -> None:
    x = _example(spec, 3)
    with torch.inference_mode():
        out = model(x)
    expected = (out[0] if isinstance(out, tuple) else out).numpy()  # GPT: (logits, loss)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (got,) = session.run([LOGITS], {spec.name: x.numpy()})
    if got.shape != expected.shape:
        wrong = f"output shape {list(got.shape)}, not {list(expected.shape)}"
    elif not np.allclose(got, expected, rtol=1e-3, atol=1e-4):
        wrong = f"outputs differ by up to {np.abs(got - expected).max():.3g}"
    else:
        return
    raise LoadFailed(
        f"the ONNX export of {type(model).__name__} disagrees with the module on input sizes other "
        f"than the traced ones ({wrong}); serve this version with runtime torch"
    )
