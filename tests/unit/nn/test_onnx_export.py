"""Every architecture exports with the TorchScript exporter and computes the same in onnxruntime,
for other batch sizes and sequence lengths than the traced ones.

Runs only where ``onnx`` and ``onnxruntime`` are installed; elsewhere the skip reason (shown by
``-ra``) names what is missing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from modelhost.nn import build_model

MISSING = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
pytestmark = [
    pytest.mark.skipif(
        bool(MISSING), reason=f"ONNX export checks need {' and '.join(MISSING)}: pip install onnx onnxruntime"
    ),
    # dynamo=False is the TorchScript exporter, deprecated since torch 2.9 and saying so on every call
    # (once itself, once from an internal helper); the dynamo exporter would need onnxscript.
    pytest.mark.filterwarnings(
        "ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning"
    ),
    pytest.mark.filterwarnings(
        r"ignore:The feature will be removed:DeprecationWarning:torch\.onnx\._internal\.torchscript_exporter"
    ),
]

# torch's own nn.LSTM/GRU code checks input sizes as Python values, which the tracer warns about, and the
# exporter warns that batched RNNs *may* not run at other batch sizes; the test runs other sizes instead.
RNN_WARNINGS = [
    pytest.mark.filterwarnings(
        r"ignore:Converting a tensor to a Python boolean:torch.jit.TracerWarning:torch\.nn"
    ),
    pytest.mark.filterwarnings(
        "ignore:Exporting a model to ONNX with a batch_size other than 1:UserWarning:torch.onnx"
    ),
]


def _floats(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


def _ids(*shape: int) -> torch.Tensor:
    return torch.randint(0, 20, shape)  # includes 0, the transformer's pad_id


# (architecture, config, example input maker, dynamic input axes). The traced input has batch 2 (length 5).
CASES = [
    pytest.param(
        "cnn",
        {"image_size": 8, "channels": [4, 8, 8], "dense": 16},
        lambda b, t: _floats(b, 64),
        [0],
        id="cnn-flat",
    ),
    pytest.param(
        "cnn",
        {"in_channels": 3, "image_size": 8, "channels": [4], "batch_norm": True},
        lambda b, t: _floats(b, 3, 8, 8),
        [0],
        id="cnn-image-bn",
    ),
    pytest.param(
        "lstm",
        {"input_size": 3, "hidden_size": 8, "num_layers": 2, "bidirectional": True, "num_classes": 4},
        lambda b, t: _floats(b, t, 3),
        [0, 1],
        id="lstm",
        marks=RNN_WARNINGS,
    ),
    pytest.param(
        "gru",
        {"vocab_size": 20, "embed_dim": 8, "hidden_size": 8, "pooling": "mean"},
        _ids,
        [0, 1],
        id="gru-tokens",
        marks=RNN_WARNINGS,
    ),
    pytest.param(
        "transformer",
        {"vocab_size": 20, "num_classes": 3, "max_len": 16, "d_model": 16, "n_heads": 2, "d_ff": 32},
        _ids,
        [0, 1],
        id="transformer-mean-learned",
    ),
    pytest.param(
        "transformer",
        {"vocab_size": 20, "num_classes": 3, "max_len": 16, "d_model": 16, "n_heads": 2, "d_ff": 32}
        | {"pooling": "cls", "positions": "sinusoidal"},
        _ids,
        [0, 1],
        id="transformer-cls-sinusoidal",
    ),
    pytest.param(
        "gpt",
        {"vocab_size": 20, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16},
        _ids,
        [0, 1],
        id="gpt",
    ),
]


def _output(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        out = model(x)
    return (out[0] if isinstance(out, tuple) else out).numpy()  # GPT: (logits, None)


@pytest.mark.parametrize(("arch", "config", "make", "axes"), CASES)
def test_export_matches_the_module(arch, config, make, axes, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    model = build_model(arch, config).eval()
    path = tmp_path / f"{arch}.onnx"
    torch.onnx.export(
        model,
        (make(2, 5),),
        str(path),
        dynamo=False,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {a: f"axis{a}" for a in axes}, "output": {0: "axis0"}},
    )
    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["output"]
    for batch, steps in [(2, 5), (3, 9), (1, 2)]:
        x = make(batch, steps)
        (got,) = session.run(None, {"input": x.numpy()})
        np.testing.assert_allclose(got, _output(model, x), rtol=1e-4, atol=1e-5)
