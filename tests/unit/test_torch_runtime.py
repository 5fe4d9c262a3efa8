"""The torch runtime's traced forward pass: the same answers as the module, used only where
it applies, and refused when it would differ."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save

from modelhost.nn import build_model
from modelhost.registry.manifest import Manifest, Signature, TensorSpec
from modelhost.serving.runtimes.outputs import ClassifierOutputs
from modelhost.serving.runtimes.torch import TorchRuntime, trace

MODELS: dict[str, tuple[dict[str, Any], int]] = {
    "mlp": ({"in_features": 6, "out_features": 3, "hidden_sizes": [8]}, 6),
    "cnn": ({"in_channels": 1, "image_size": 8, "num_classes": 3, "channels": [4]}, 64),
}


def runtime(architecture: str, config: dict[str, Any], width: int) -> TorchRuntime:
    torch.manual_seed(0)
    module = build_model(architecture, config)
    manifest = Manifest(
        architecture=architecture,
        config=config,
        task="classification",
        classes=[0, 1, 2],
        signature=Signature(
            inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, width])],
            outputs=[
                TensorSpec(name="label", datatype="INT64", shape=[-1]),
                TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 3]),
            ],
        ),
    )
    return TorchRuntime(manifest, save(module.state_dict()))


@pytest.mark.parametrize("architecture", sorted(MODELS))
def test_the_trace_answers_what_the_module_answers(architecture: str) -> None:
    config, width = MODELS[architecture]
    rt = runtime(architecture, config, width)
    assert rt.traced is not None
    x = np.random.default_rng(0).standard_normal((5, width)).astype(np.float32)
    with torch.inference_mode():
        expected = rt.model(torch.from_numpy(x)).numpy()
    out = rt.predict({"input": x})
    np.testing.assert_allclose(
        out["probabilities"], torch.from_numpy(expected).softmax(-1).numpy(), rtol=1e-5
    )
    assert out["label"].tolist() == expected.argmax(-1).tolist()


def test_inputs_of_another_shape_run_on_the_module() -> None:
    config, width = MODELS["cnn"]
    rt = runtime("cnn", config, width)
    images = torch.rand(2, 1, 8, 8)  # (B, C, H, W): the module takes it, the trace was made for rows
    with torch.inference_mode():
        assert torch.equal(rt.forward(images), rt.model(images))


def test_a_trace_that_would_differ_from_the_module_is_refused() -> None:
    class ScalesByBatchSize(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * len(x)  # a Python int: a trace would freeze the example's batch size

    assert trace(ScalesByBatchSize(), 4) is None


def test_architectures_with_control_flow_are_not_traced() -> None:
    config = {"vocab_size": 20, "num_classes": 3, "embed_dim": 8, "hidden_size": 8}
    rt = runtime("lstm", config, 5)
    assert rt.traced is None


def test_binary_outputs_are_the_sigmoid_and_a_tie_picks_the_first_class() -> None:
    manifest = runtime("mlp", *MODELS["mlp"]).manifest.model_copy(
        update={"task": "binary", "classes": [3, 7]}
    )
    logits = np.array([[-2.0], [0.0], [1.5]], dtype=np.float32)
    out = ClassifierOutputs(manifest)(logits)
    positive = 1 / (1 + np.exp(-logits[:, 0]))
    np.testing.assert_allclose(out["probabilities"], np.stack([1 - positive, positive], axis=1), rtol=1e-6)
    assert out["probabilities"].dtype == np.float32
    assert out["label"].tolist() == [3, 3, 7]


def test_class_outputs_are_the_softmax_and_the_label_of_its_argmax() -> None:
    manifest = runtime("mlp", *MODELS["mlp"]).manifest.model_copy(update={"classes": ["a", "b", "c"]})
    logits = np.array([[0.0, 2.0, 1.0], [5.0, 5.0, -1.0]], dtype=np.float32)
    out = ClassifierOutputs(manifest)(logits)
    expected = torch.from_numpy(logits).softmax(-1).numpy()
    np.testing.assert_allclose(out["probabilities"], expected, rtol=1e-6)
    assert out["label"].tolist() == ["b", "a"]
