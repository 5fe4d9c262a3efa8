"""Builders of hostile model files: GGUF, safetensors and ONNX bytes, each wrong in one way.

Written by hand (struct and JSON), not by the formats' own writers, which refuse to write
what these files say.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper

# --- GGUF: magic, version, n_tensors, n_kv, key/values, tensor infos, padding, data

U32, F32, STRING, ARRAY, U64 = 4, 6, 8, 9, 10
BIG = 1 << 62


def gguf_string(s: str | bytes, claimed: int | None = None) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw) if claimed is None else claimed) + raw


def gguf_kv(key: str, kind: int, value: object) -> bytes:
    out = gguf_string(key) + struct.pack("<I", kind)
    if kind == U32:
        return out + struct.pack("<I", value)
    if kind == F32:
        return out + struct.pack("<f", value)
    if kind == STRING:
        return out + gguf_string(str(value))
    if kind == U64:
        return out + struct.pack("<Q", value)
    assert kind == ARRAY and isinstance(value, list)
    return out + struct.pack("<IQ", STRING, len(value)) + b"".join(gguf_string(v) for v in value)


LLAMA_META = [
    ("general.architecture", STRING, "llama"),
    ("llama.embedding_length", U32, 8),
    ("llama.feed_forward_length", U32, 16),
    ("llama.block_count", U32, 1),
    ("llama.attention.head_count", U32, 2),
    ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
    ("llama.context_length", U32, 32),
    ("tokenizer.ggml.model", STRING, "gpt2"),
    ("tokenizer.ggml.tokens", ARRAY, [chr(ord("a") + i) for i in range(16)]),
    ("tokenizer.ggml.merges", ARRAY, ["a b"]),
]


def gguf(
    tensors: list[tuple[str, list[int], int, int]] = (),  # type: ignore[assignment]
    data: bytes = b"",
    meta: list[tuple[str, int, object]] | None = None,
    *,
    version: int = 3,
    n_tensors: int | None = None,
    n_kv: int | None = None,
    raw_kv: bytes = b"",
) -> bytes:
    """A GGUF file: ``tensors`` are (name, dims, ggml type, offset into ``data``)."""
    meta = LLAMA_META if meta is None else meta
    kvs = b"".join(gguf_kv(*m) for m in meta) + raw_kv
    infos = b"".join(
        gguf_string(name)
        + struct.pack("<I", len(dims))
        + struct.pack(f"<{len(dims)}Q", *dims)
        + struct.pack("<IQ", kind, offset)
        for name, dims, kind, offset in tensors
    )
    head = b"GGUF" + struct.pack(
        "<IQQ",
        version,
        len(tensors) if n_tensors is None else n_tensors,
        len(meta) + bool(raw_kv) if n_kv is None else n_kv,
    )
    body = head + kvs + infos
    return body + bytes(-len(body) % 32) + data


def gguf_attacks() -> list[tuple[str, bytes]]:
    embd = ("token_embd.weight", [8, 16], 0, 0)  # F32, 8 x 16 floats = 512 bytes
    ok_data = np.zeros(128, np.float32).tobytes()
    return [
        ("only the magic", b"GGUF"),
        ("truncated header", gguf()[:13]),
        ("version 99", gguf(version=99)),
        ("truncated metadata", gguf()[:60]),
        ("n_tensors 2^62", gguf(n_tensors=BIG)),
        ("n_kv 2^62", gguf(n_kv=BIG)),
        ("key length 2^62", gguf(raw_kv=gguf_string("x", claimed=BIG))),
        (
            "string value length 2^40",
            gguf(raw_kv=gguf_string("k") + struct.pack("<I", STRING) + gguf_string("v", 1 << 40)),
        ),
        ("array length 2^60", gguf(raw_kv=gguf_string("k") + struct.pack("<IIQ", ARRAY, U32, 1 << 60))),
        ("nested array bomb", gguf(raw_kv=gguf_string("k") + struct.pack("<IIQ", ARRAY, ARRAY, 1 << 40))),
        ("unknown value type", gguf(raw_kv=gguf_string("k") + struct.pack("<I", 999))),
        ("tensor offset past the end", gguf([(embd[0], embd[1], 0, 1 << 40)], ok_data)),
        ("tensor data cut short", gguf([embd], ok_data[:100])),
        ("huge dims", gguf([("token_embd.weight", [1 << 32, 1 << 32], 0, 0)], ok_data)),
        ("dims overflow 64 bits", gguf([("token_embd.weight", [1 << 63, 1 << 63, 4], 0, 0)], ok_data)),
        ("n_dims 2^31", gguf_n_dims_bomb()),
        ("unknown tensor type", gguf([("token_embd.weight", [8, 16], 999, 0)], ok_data)),
        ("tensor name length 2^62", _gguf_bad_tensor_name()),
        ("many empty tensors", gguf([(f"blk.0.x{i}", [0], 0, 0) for i in range(2000)], b"")),
    ]


def gguf_nested_arrays(depth: int) -> bytes:
    """A key whose value is an array of an array of ... ``depth`` deep (the reader recurses)."""
    raw = gguf_string("k") + struct.pack("<I", ARRAY)
    raw += struct.pack("<IQ", ARRAY, 1) * depth + struct.pack("<IQI", U32, 1, 7)
    return gguf(raw_kv=raw)


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def _gguf_bad_tensor_name() -> bytes:
    body = b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + gguf_string("x", claimed=BIG)
    return body


def gguf_n_dims_bomb() -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + gguf_string("t") + struct.pack("<I", 1 << 31)


# --- safetensors: u64 header length, JSON header, data


def safetensors_file(
    header: dict[str, object] | bytes, data: bytes = b"", claimed: int | None = None
) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if claimed is None else claimed) + raw + data


def safetensors_attacks() -> list[tuple[str, bytes]]:
    t = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
    data = bytes(16)
    return [
        ("header length past the end", safetensors_file({"w": t}, data, claimed=1 << 40)),
        ("header length 2^64-1", safetensors_file({"w": t}, data, claimed=(1 << 64) - 1)),
        ("huge header", safetensors_file(b"{" + b" " * (101 << 20) + b"}")),
        ("header not JSON", safetensors_file(b"\x80\x04not json", data)),
        ("header a list", safetensors_file(b"[1, 2, 3]", data)),
        ("offsets past the end", safetensors_file({"w": {**t, "data_offsets": [0, 1 << 40]}}, data)),
        ("offsets reversed", safetensors_file({"w": {**t, "data_offsets": [16, 0]}}, data)),
        ("offsets negative", safetensors_file({"w": {**t, "data_offsets": [-16, 0]}}, data)),
        ("dtype/shape mismatch", safetensors_file({"w": {**t, "shape": [4, 4]}}, data)),
        ("huge shape", safetensors_file({"w": {**t, "shape": [1 << 40, 1 << 40]}}, data)),
        ("shape overflows", safetensors_file({"w": {**t, "shape": [1 << 62, 1 << 62, 16]}}, data)),
        ("unknown dtype", safetensors_file({"w": {**t, "dtype": "Q9"}}, data)),
        ("overlapping tensors", safetensors_file({"w": t, "v": t}, data)),
        ("empty file", b""),
        ("seven bytes", b"\x00" * 7),
    ]


LLAMA_CONFIG = {
    "model_type": "llama",
    "vocab_size": 16,
    "hidden_size": 8,
    "intermediate_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
}


def zipped(files: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def hf_folder(weights: bytes, config: dict[str, object] | None = None) -> bytes:
    """A Hugging Face folder as a zip: config.json, model.safetensors, tokenizer.json."""
    return zipped(
        {
            "config.json": json.dumps(config or LLAMA_CONFIG),
            "model.safetensors": weights,
            "tokenizer.json": "{}",
        }
    )


def tiny_llama_files() -> dict[str, str | bytes]:
    """A Hugging Face folder that imports: LLAMA_CONFIG, zero weights of its shapes, a 16-token
    word-level tokenizer. Attacks swap one file of it, so the parser they aim at is reached."""
    from safetensors.numpy import save
    from tokenizers import Tokenizer, models

    from modelhost.nn.llama import LlamaConfig, expected_shapes

    shapes = expected_shapes(LlamaConfig.from_hf(LLAMA_CONFIG))
    weights = save({name: np.zeros(shape, np.float32) for name, shape in shapes.items()})
    vocab = {chr(ord("a") + i): i for i in range(16)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="a")).to_str()
    return {
        "config.json": json.dumps(LLAMA_CONFIG),
        "model.safetensors": weights,
        "tokenizer.json": tokenizer,
    }


# --- ONNX


def onnx_model(
    inputs: list[onnx.ValueInfoProto] | None = None,
    initializers: list[onnx.TensorProto] = (),  # type: ignore[assignment]
    nodes: list[onnx.NodeProto] | None = None,
    opset: int = 17,
    domain: str = "",
) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
    graph = helper.make_graph(
        nodes or [helper.make_node("Identity", ["x"], ["y"])], "g", inputs or [x], [y], list(initializers)
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, opset)])
    model.ir_version = 8
    return model


def raw_tensor(dims: list[int], raw: bytes = b"") -> onnx.TensorProto:
    """A float initializer ``w`` built field by field: make_tensor would check dims against data."""
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, raw_data=raw)
    t.dims.extend(dims)
    return t


def external_tensor(location: str, offset: int = 0, length: int = 16) -> onnx.TensorProto:
    t = raw_tensor([2, 2])
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = t.external_data.add()
        entry.key, entry.value = k, v
    return t


def onnx_attacks() -> list[tuple[str, bytes]]:
    add = [helper.make_node("Add", ["x", "w"], ["y"])]
    huge, short = raw_tensor([1 << 40, 1 << 40]), raw_tensor([2, 2], bytes(4))
    big_input = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1 << 62, 1 << 62])
    sub = onnx_model(initializers=[external_tensor("/etc/passwd")], nodes=add).graph
    nested = helper.make_node("If", ["c"], ["y"], then_branch=sub, else_branch=sub)
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    return [
        ("garbage", b"\x08\x07garbage that is not protobuf \xff\xff\xff"),
        ("empty", b""),
        ("truncated", onnx_model().SerializeToString()[:20]),
        ("external data ../", onnx_model([], [external_tensor("../../canary.txt")], add).SerializeToString()),
        ("external data absolute", onnx_model([], [external_tensor("/etc/passwd")], add).SerializeToString()),
        ("external data in a subgraph", onnx_model([cond], [], [nested]).SerializeToString()),
        (
            "external offset huge",
            onnx_model([], [external_tensor("w.bin", 1 << 40, 1 << 40)], add).SerializeToString(),
        ),
        ("initializer huge dims, no data", onnx_model([], [huge], add).SerializeToString()),
        ("initializer data short", onnx_model([], [short], add).SerializeToString()),
        ("input dims 2^62", onnx_model([big_input]).SerializeToString()),
        ("unknown operator", onnx_model(nodes=[helper.make_node("Evil", ["x"], ["y"])]).SerializeToString()),
        (
            "unknown domain",
            onnx_model(nodes=[helper.make_node("Run", ["x"], ["y"], domain="evil.ops")]).SerializeToString(),
        ),
        ("opset 999", onnx_model(opset=999).SerializeToString()),
    ]
