"""The onnx runtime against the torch runtime, for every architecture modelhost trains, and
imported external ONNX graphs: signature, pass-through serving, refusals."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from safetensors.torch import load, save

from modelhost.artifacts.local import LocalArtifactStore
from modelhost.db import Database
from modelhost.errors import InvalidInput, LoadFailed, NotFound, UnsafeContent
from modelhost.nn import ARCHITECTURES, build_model
from modelhost.registry.manifest import (
    MANIFEST_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    Manifest,
    Signature,
    TensorSpec,
)
from modelhost.registry.onnx_export import LOGITS, export_onnx
from modelhost.registry.onnx_import import import_onnx, signature_from_onnx
from modelhost.registry.service import read_version_file
from modelhost.serving.runtimes import load_runtime
from modelhost.serving.runtimes.onnx import OnnxRuntime
from modelhost.serving.runtimes.torch import TorchRuntime
from modelhost.training.package import output_specs


@dataclass(frozen=True)
class Example:
    """A small config of one architecture and inputs its module takes."""

    config: dict[str, Any]
    datatype: str
    shape: list[int]
    """The signature's input shape: -1 for the batch (and any variable length)."""
    make: Callable[[np.random.Generator, int], np.ndarray]
    """Random raw input of ``n`` rows."""
    classes: int | None
    """Output classes for a model the torch and onnx runtimes serve; None for the LLM runtime's."""


def _floats(*shape: int) -> Callable[[np.random.Generator, int], np.ndarray]:
    return lambda rng, n: rng.normal(3.0, 2.0, size=(n, *shape)).astype(np.float32)


def _ids(vocab: int, length: int) -> Callable[[np.random.Generator, int], np.ndarray]:
    return lambda rng, n: rng.integers(0, vocab, size=(n, length)).astype(np.int64)


# Every architecture in modelhost.nn.ARCHITECTURES needs an entry: a new one fails
# test_export_matches_module until it is added here.
EXAMPLES: dict[str, Example] = {
    "mlp": Example(
        {"in_features": 5, "out_features": 3, "hidden_sizes": [16, 8]}, "FP32", [-1, 5], _floats(5), 3
    ),
    "cnn": Example(
        {"in_channels": 1, "image_size": 8, "num_classes": 4, "channels": [4, 8], "dense": 16},
        "FP32",
        [-1, 64],
        _floats(64),
        4,
    ),
    "lstm": Example(
        {"input_size": 3, "hidden_size": 8, "num_layers": 2, "bidirectional": True, "num_classes": 3},
        "FP32",
        [-1, 6, 3],
        _floats(6, 3),
        3,
    ),
    "gru": Example(
        {"vocab_size": 20, "embed_dim": 8, "hidden_size": 8, "num_classes": 3, "pooling": "mean"},
        "INT64",
        [-1, 6],
        _ids(20, 6),
        3,
    ),
    "transformer": Example(
        {"vocab_size": 20, "num_classes": 3, "max_len": 16, "d_model": 16, "n_heads": 2, "n_layers": 2},
        "INT64",
        [-1, -1],
        _ids(20, 9),
        3,
    ),
    "gpt": Example(
        {"vocab_size": 20, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16},
        "INT64",
        [-1, -1],
        _ids(20, 9),
        None,
    ),
    "bert": Example(
        {
            "vocab_size": 20,
            "hidden_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "max_position_embeddings": 16,
            "max_length": 16,
            "normalize": True,
        },
        "INT64",
        [-1, -1],
        _ids(20, 9),
        None,
    ),
}


def _example(architecture: str) -> Example:
    if architecture not in EXAMPLES:
        pytest.fail(f"architecture {architecture!r} has no entry in EXAMPLES of {__file__}; add one")
    return EXAMPLES[architecture]


def _weights(model: torch.nn.Module) -> bytes:
    """safetensors of the module, one name per tied tensor (the loader restores the other)."""
    state, seen = {}, set()
    for name, t in model.state_dict().items():
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            state[name] = t.detach().contiguous()
    return save(state)


def _version(architecture: str, task: str = "classification") -> tuple[Manifest, bytes]:
    ex = _example(architecture)
    torch.manual_seed(0)
    model = build_model(architecture, ex.config)
    classes = list(range(ex.classes)) if ex.classes and task == "classification" else None
    width = ex.shape[-1]
    standardize = ex.datatype == "FP32"  # the runtimes must apply the same preprocessing
    manifest = Manifest(
        architecture=architecture,
        config=ex.config,
        task=task,
        signature=Signature(
            inputs=[TensorSpec(name="input", datatype=ex.datatype, shape=ex.shape)],
            outputs=output_specs(task, classes),
        ),
        preprocessing={  # a manifest as the first releases wrote it
            "kind": "standardize",
            "mean": [3.0] * width,
            "std": [2.0] * width,
            "features": [f"f{i}" for i in range(width)],
        }
        if standardize
        else {"kind": "none"},
        classes=classes,
    )
    return manifest, _weights(model)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_export_matches_module(architecture: str) -> None:
    manifest, weights = _version(architecture)
    ex = _example(architecture)
    model = build_model(architecture, ex.config)
    model.load_state_dict(load(weights))
    model.eval()
    session = ort.InferenceSession(export_onnx(manifest, weights), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == [LOGITS]
    for n in (1, 7):
        x = ex.make(np.random.default_rng(n), n)
        with torch.inference_mode():
            out = model(torch.from_numpy(x))
        expected = (out[0] if isinstance(out, tuple) else out).numpy()
        (got,) = session.run([LOGITS], {"input": x})
        assert got.shape == expected.shape and got.shape[0] == n
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@dataclass
class _BatchSizedConfig:
    width: int = 2


class _BatchSized(torch.nn.Module):
    """Scales by the batch size read as a Python int: the trace freezes it at the traced size."""

    def __init__(self, config: _BatchSizedConfig):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(config.width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale * int(x.shape[0])


def test_export_refuses_a_trace_that_does_not_hold_for_other_sizes(monkeypatch) -> None:
    monkeypatch.setitem(ARCHITECTURES, "batch-sized", (_BatchSized, _BatchSizedConfig))
    manifest = Manifest(
        architecture="batch-sized",
        config={"width": 2},
        task="regression",
        signature=Signature(inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 2])], outputs=[]),
    )
    with pytest.raises(LoadFailed, match="disagrees with the module"):
        export_onnx(manifest, save({"scale": torch.ones(2)}))


@pytest.mark.parametrize("architecture", [a for a, ex in sorted(EXAMPLES.items()) if ex.classes is not None])
def test_onnx_runtime_matches_torch_runtime(architecture: str) -> None:
    manifest, weights = _version(architecture)
    onnx_rt = OnnxRuntime(manifest, export_onnx(manifest, weights))
    torch_rt = TorchRuntime(manifest, weights)
    assert (onnx_rt.name, torch_rt.name) == ("onnx", "torch")
    for n in (1, 7, 64):
        x = EXAMPLES[architecture].make(np.random.default_rng(n), n)
        got = onnx_rt.predict({"input": x})
        expected = torch_rt.predict({"input": x})
        assert list(got) == list(expected) == ["label", "probabilities"]
        assert {k: (v.dtype, v.shape) for k, v in got.items()} == {
            k: (v.dtype, v.shape) for k, v in expected.items()
        }
        np.testing.assert_allclose(got["probabilities"], expected["probabilities"], rtol=0, atol=1e-5)
        assert got["label"].tolist() == expected["label"].tolist()


def test_onnx_runtime_matches_torch_runtime_for_regression() -> None:
    manifest, weights = _version("mlp", task="regression")
    x = EXAMPLES["mlp"].make(np.random.default_rng(0), 7)
    got = OnnxRuntime(manifest, export_onnx(manifest, weights)).predict({"input": x})
    expected = TorchRuntime(manifest, weights).predict({"input": x})
    assert list(got) == ["prediction"] and got["prediction"].dtype == np.float32
    np.testing.assert_allclose(got["prediction"], expected["prediction"], rtol=0, atol=1e-5)


def _files(files: dict[str, bytes]) -> Callable[[str], bytes]:
    def read_file(name: str) -> bytes:
        if name not in files:
            raise NotFound(f"no file {name!r}")
        return files[name]

    return read_file


def test_onnx_loader_exports_a_trained_version_and_prefers_its_model_onnx() -> None:
    manifest, weights = _version("mlp")
    x = EXAMPLES["mlp"].make(np.random.default_rng(0), 4)
    exported = load_runtime("onnx", manifest, _files({WEIGHTS_FILE: weights}))
    assert exported.name == "onnx"
    np.testing.assert_allclose(
        exported.predict({"input": x})["probabilities"],
        TorchRuntime(manifest, weights).predict({"input": x})["probabilities"],
        rtol=0,
        atol=1e-5,
    )
    torch.manual_seed(1)
    other = _weights(build_model("mlp", manifest.config))  # different weights in model.onnx
    shipped = load_runtime(
        "onnx", manifest, _files({WEIGHTS_FILE: weights, ONNX_FILE: export_onnx(manifest, other)})
    )
    np.testing.assert_allclose(
        shipped.predict({"input": x})["probabilities"],
        TorchRuntime(manifest, other).predict({"input": x})["probabilities"],
        rtol=0,
        atol=1e-5,
    )


# --- imported external graphs


def tiny_graph(batch: str | int = "N") -> bytes:
    """ids (INT64, [N, 3]) and x (FP32, [N, 2]) in; ``scaled`` = x * sum(ids) (FP32, [N, 2])
    and ``doubled`` = ids + ids (INT64, [N, 3]) out."""
    nodes = [
        helper.make_node("ReduceSum", ["ids", "axes"], ["total"], keepdims=1),
        helper.make_node("Cast", ["total"], ["total_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "total_f"], ["scaled"]),
        helper.make_node("Add", ["ids", "ids"], ["doubled"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        inputs=[
            helper.make_tensor_value_info("ids", TensorProto.INT64, [batch, 3]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2]),
        ],
        outputs=[
            helper.make_tensor_value_info("scaled", TensorProto.FLOAT, [batch, 2]),
            helper.make_tensor_value_info("doubled", TensorProto.INT64, [batch, 3]),
        ],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime >= 1.18
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _imported(data: bytes) -> Manifest:
    return Manifest(architecture="onnx", config={}, task="custom", signature=signature_from_onnx(data))


def test_signature_from_onnx_names_types_and_variable_dims() -> None:
    assert signature_from_onnx(tiny_graph()) == Signature(
        inputs=[
            TensorSpec(name="ids", datatype="INT64", shape=[-1, 3]),
            TensorSpec(name="x", datatype="FP32", shape=[-1, 2]),
        ],
        outputs=[
            TensorSpec(name="scaled", datatype="FP32", shape=[-1, 2]),
            TensorSpec(name="doubled", datatype="INT64", shape=[-1, 3]),
        ],
    )


def test_imported_graph_serves_its_own_inputs_and_outputs() -> None:
    runtime = OnnxRuntime(_imported(tiny_graph()), tiny_graph())
    ids = np.array([[1, 2, 3], [0, 0, 1]], dtype=np.float32)  # the data plane hands over float32
    x = np.array([[1.0, 0.5], [2.0, -1.0]], dtype=np.float32)
    out = runtime.predict({"x": x, "ids": ids})
    assert list(out) == ["scaled", "doubled"]
    assert out["scaled"].dtype == np.float32 and out["scaled"].tolist() == [[6.0, 3.0], [2.0, -1.0]]
    assert out["doubled"].dtype == np.int64 and out["doubled"].tolist() == [[2, 4, 6], [0, 0, 2]]


def test_imported_graph_with_a_fixed_batch_of_one_runs_row_by_row() -> None:
    runtime = OnnxRuntime(_imported(tiny_graph(batch=1)), tiny_graph(batch=1))
    ids = np.arange(15, dtype=np.int64).reshape(5, 3)
    out = runtime.predict({"ids": ids, "x": np.ones((5, 2), dtype=np.float32)})
    assert out["doubled"].tolist() == (2 * ids).tolist()
    assert out["scaled"][:, 0].tolist() == ids.sum(axis=1).astype(np.float32).tolist()


def test_imported_graph_names_a_missing_input() -> None:
    runtime = OnnxRuntime(_imported(tiny_graph()), tiny_graph())
    with pytest.raises(InvalidInput, match="missing input 'x'"):
        runtime.predict({"ids": np.zeros((1, 3), dtype=np.float32)})


def test_unsupported_tensor_type_is_refused_by_name() -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["half"], ["out"])],
        "fp16",
        inputs=[helper.make_tensor_value_info("half", TensorProto.FLOAT16, ["N", 2])],
        outputs=[helper.make_tensor_value_info("out", TensorProto.FLOAT16, ["N", 2])],
    )
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    with pytest.raises(InvalidInput, match="tensor 'half' is FLOAT16"):
        signature_from_onnx(data)


def test_imported_version_cannot_run_on_torch() -> None:
    manifest = _imported(tiny_graph())
    with pytest.raises(LoadFailed, match="deploy it with runtime 'onnx'"):
        load_runtime("torch", manifest, _files({ONNX_FILE: tiny_graph()}))


@pytest.fixture
def registry(tmp_path: Path):
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    db.migrate()
    yield db, LocalArtifactStore(tmp_path / "artifacts")
    db.dispose()


def test_import_registers_a_custom_onnx_version(registry) -> None:
    db, store = registry
    with db.session() as s:
        version = import_onnx(s, store, "tiny", tiny_graph(), "tiny.onnx")
        assert version.number == 1 and set(version.files) == {MANIFEST_FILE, ONNX_FILE}
        assert version.manifest.architecture == "onnx" and version.manifest.task == "custom"
        assert version.manifest.config == {}
        assert version.manifest.signature == signature_from_onnx(tiny_graph())
        assert read_version_file(s, store, version, ONNX_FILE) == tiny_graph()


@pytest.mark.parametrize(
    ("data", "filename", "error", "message"),
    [
        (b"a,b\n1,2\n", "data.onnx", InvalidInput, "'data.onnx' is not a valid ONNX model"),
        (b"", "empty.onnx", InvalidInput, "'empty.onnx' is not a valid ONNX model"),
        (pickle.dumps({"weights": [1, 2]}, protocol=4), "model.onnx", UnsafeContent, "never loads pickles"),
        (tiny_graph(), "model.pt", UnsafeContent, "never loads pickles"),
    ],
)
def test_import_refuses_what_is_not_onnx(
    registry, data: bytes, filename: str, error: type, message: str
) -> None:
    db, store = registry
    with pytest.raises(error, match=message), db.session() as s:
        import_onnx(s, store, "bad", data, filename)
    assert store.list("models/") == []


@pytest.mark.parametrize("location", ["weights.bin", "../../etc/passwd"])
def test_import_refuses_external_data(registry, location: str) -> None:
    model = onnx.load_model_from_string(tiny_graph())
    axes = model.graph.initializer[0]
    axes.data_location = TensorProto.EXTERNAL
    axes.external_data.add(key="location", value=location)
    axes.ClearField("int64_data")
    db, store = registry
    with pytest.raises(InvalidInput, match="external data"), db.session() as s:
        import_onnx(s, store, "ext", model.SerializeToString(), "ext.onnx")


def test_imported_graph_takes_and_gives_strings() -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["echo"])],
        "strings",
        inputs=[helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        outputs=[helper.make_tensor_value_info("echo", TensorProto.STRING, ["N"])],
    )
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data.ir_version = 8
    manifest = _imported(data.SerializeToString())
    assert manifest.signature.inputs == [TensorSpec(name="text", datatype="BYTES", shape=[-1])]
    text = np.empty(2, dtype=object)
    text[:] = [b"caf\xc3\xa9", b"tea"]  # the data plane's BYTES: an object array of bytes
    runtime = OnnxRuntime(manifest, data.SerializeToString())
    assert runtime.predict({"text": text})["echo"].tolist() == ["café", "tea"]
    text[1] = b"\xff"
    with pytest.raises(InvalidInput, match="input 'text': string tensors must be UTF-8"):
        runtime.predict({"text": text})
