"""Attack item 7: malformed model files give a clean 4xx — no crash, no hang, no file read.

GGUF (truncated headers, tensor offsets past the end, counts and lengths claiming exabytes),
safetensors inside a Hugging Face folder (header lengths past the end, offsets out of range,
dtype/shape mismatches, a huge header) and ONNX (garbage, huge dimensions, external data pointing
at ``../`` or absolute paths, also from inside a model-local function) are imported through the
server; each answers 4xx in seconds, the server stays healthy, and whatever was accepted at import
is refused again at deploy or inference. Every test runs under a timeout.
"""

from __future__ import annotations

import time

import httpx
import pytest
from onnx import TensorProto, helper

from modelhost.errors import InvalidInput
from modelhost.registry.manifest import Manifest, Signature, TensorSpec
from tests.security.malformed import (
    deep_json,
    gguf_attacks,
    gguf_nested_arrays,
    hf_folder,
    onnx_attacks,
    safetensors_attacks,
    tiny_llama_files,
    zipped,
)
from tests.security.support import Target, admin, assert_healthy, target

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
__all__ = ["admin", "target"]  # fixtures, imported for pytest


def import_refused(admin: httpx.Client, name: str, filename: str, data: bytes, label: str) -> httpx.Response:
    start = time.monotonic()
    r = admin.post(f"/api/v1/models/{name}/import", files={"file": (filename, data)})
    assert time.monotonic() - start < 30, (label, "took too long")
    assert 400 <= r.status_code < 500, (label, r.status_code, r.text)
    message = r.json()["error"]["message"]
    assert message and len(message) < 2000, (label, message)  # says what is wrong, echoes no file
    return r


@pytest.mark.parametrize(("label", "data"), gguf_attacks(), ids=[a for a, _ in gguf_attacks()])
def test_malformed_gguf_is_refused(target: Target, admin: httpx.Client, label: str, data: bytes) -> None:
    import_refused(admin, "gguf", "model.gguf", data, label)
    assert_healthy(target.url)


@pytest.mark.parametrize(("label", "data"), safetensors_attacks(), ids=[a for a, _ in safetensors_attacks()])
def test_malformed_safetensors_are_refused(
    target: Target, admin: httpx.Client, label: str, data: bytes
) -> None:
    r = import_refused(admin, "hf", "folder.zip", hf_folder(data), label)
    assert "model.safetensors" in r.json()["error"]["message"], (label, r.text)
    assert_healthy(target.url)


ONNX_IMPORTABLE = {"input dims 2^62", "opset 999"}  # valid files; what is wrong shows when they run


@pytest.mark.parametrize(("label", "data"), onnx_attacks(), ids=[a for a, _ in onnx_attacks()])
def test_malformed_onnx_is_refused(target: Target, admin: httpx.Client, label: str, data: bytes) -> None:
    if label not in ONNX_IMPORTABLE:
        r = import_refused(admin, "onnx", "model.onnx", data, label)
        if label.startswith("external"):
            assert "external data" in r.json()["error"]["message"]
        assert_healthy(target.url)
        return
    name = "odd-" + label.split()[0]
    r = admin.post(f"/api/v1/models/{name}/import", files={"file": ("model.onnx", data)})
    assert r.status_code in (201, 400), (label, r.text)
    if r.status_code == 201:  # then deploying or serving it must fail cleanly
        d = admin.put(f"/api/v1/deployments/{name}", json={"model": name, "version": 1})
        assert d.status_code in (201, 400, 422), (label, d.text)
        if d.status_code == 201:
            p = admin.post(f"/v1/models/{name}:predict", json={"instances": [[1.0, 2.0]]})
            assert p.status_code == 400, (label, p.text)
    assert_healthy(target.url)


def test_deeply_nested_files_are_refused(target: Target, admin: httpx.Client) -> None:
    """Parsers that recurse (json, gguf's arrays of arrays, Jinja) meet files nested 100,000 deep:
    a 400 naming the file, not a RecursionError's 500."""
    deep = deep_json(100_000)
    r = import_refused(admin, "deep", "deep.gguf", gguf_nested_arrays(20_000), "nested GGUF arrays")
    assert "deep.gguf" in r.json()["error"]["message"]
    honest = tiny_llama_files()
    r = admin.post("/api/v1/models/honest/import", files={"file": ("ok.zip", zipped(honest))})
    assert r.status_code == 201, r.text  # the folder the attacks start from does import
    for path in ("config.json", "tokenizer_config.json", "generation_config.json"):
        r = import_refused(admin, "deep", "deep.zip", zipped({**honest, path: deep}), path)
        assert path in r.json()["error"]["message"] and "nested too deeply" in r.json()["error"]["message"]
    template = "{{ " + "(" * 50_000 + "1" + ")" * 50_000 + " }}"
    r = import_refused(
        admin, "deep", "deep.zip", zipped({**honest, "chat_template.jinja": template}), "jinja"
    )
    assert "nested too deeply" in r.json()["error"]["message"], r.text
    r = admin.post(
        "/api/v1/datasets",
        data={"name": "deep"},
        files={"file": ("d.jsonl", f'{{"a": 1}}\n{{"a": {deep}}}\n')},
    )
    assert r.status_code == 400 and "line 2" in r.json()["error"]["message"], r.text
    assert_healthy(target.url)


def leaky_onnx(location: str) -> bytes:
    """A model whose local function holds a Constant with external data at ``location``:
    onnxruntime inlines the function at load and reads that file relative to its working
    directory, and the graph returns the bytes. (The import once checked only the main graph.)"""
    tensor = TensorProto(name="w", data_type=TensorProto.INT32, data_location=TensorProto.EXTERNAL)
    tensor.dims.append(16)
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    nodes = [
        helper.make_node("Constant", [], ["c"], value=tensor),
        helper.make_node("Add", ["a", "c"], ["out"]),
    ]
    leak = helper.make_function("local", "Leak", ["a"], ["out"], nodes, [helper.make_opsetid("", 17)])
    x = helper.make_tensor_value_info("x", TensorProto.INT32, [16])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, [16])
    graph = helper.make_graph([helper.make_node("Leak", ["x"], ["y"], domain="local")], "g", [x], [y])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    model = helper.make_model(graph, opset_imports=opsets, functions=[leak])
    model.ir_version = 8
    return model.SerializeToString()


def test_external_data_in_a_model_function_cannot_read_server_files(
    target: Target, admin: httpx.Client
) -> None:
    """``pyproject.toml`` is in the server's working directory (the repository root) here."""
    for location in (
        "pyproject.toml",
        "./pyproject.toml",
        "../../canary.txt",
        str(target.tmp / "canary.txt"),
    ):
        r = import_refused(admin, "leak", "leak.onnx", leaky_onnx(location), location)
        assert "external data" in r.json()["error"]["message"]
    assert admin.get("/api/v1/models/leak/versions").status_code == 404


def test_the_onnx_runtime_refuses_external_data_too() -> None:
    """Defence in depth for versions stored before the import checked functions: loading one fails."""
    from modelhost.serving.runtimes.onnx import OnnxRuntime

    spec = [TensorSpec(name="x", datatype="INT32", shape=[16])]
    out = [TensorSpec(name="y", datatype="INT32", shape=[16])]
    manifest = Manifest(
        architecture="onnx", config={}, task="custom", signature=Signature(inputs=spec, outputs=out)
    )
    with pytest.raises(InvalidInput, match="external data"):
        OnnxRuntime(manifest, leaky_onnx("pyproject.toml"))
