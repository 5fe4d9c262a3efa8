"""The OIP v2 codec against tritonclient's own request encoder and response decoder (no server)."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput, InferResult

from modelhost.errors import InvalidInput, PlatformError
from modelhost.registry.manifest import Signature, TensorSpec
from modelhost.serving.oip import (
    InferRequest,
    RequestedOutput,
    encode_infer_response,
    parse_infer_request,
)

SIG = Signature(
    inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 4])],
    outputs=[
        TensorSpec(name="label", datatype="INT64", shape=[-1]),
        TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 3]),
    ],
)
TWO_INPUTS = Signature(
    inputs=[
        TensorSpec(name="a", datatype="FP32", shape=[-1, 2]),
        TensorSpec(name="b", datatype="INT64", shape=[-1]),
    ],
    outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1])],
)
X = np.arange(8, dtype=np.float32).reshape(2, 4) / 8


def _input(name: str, arr: np.ndarray, datatype: str, binary: bool) -> InferInput:
    tensor = InferInput(name, list(arr.shape), datatype)
    tensor.set_data_from_numpy(arr, binary_data=binary)
    return tensor


def _encode(inputs: list[InferInput], **kwargs: Any) -> tuple[bytes, int | None]:
    """The body and Inference-Header-Content-Length exactly as tritonclient sends them."""
    body, json_size = InferenceServerClient.generate_request_body(inputs, **kwargs)
    return body, json_size


def _parse(body: bytes, header_length: int | None, sig: Signature = SIG, max_rows: int = 8) -> InferRequest:
    return parse_infer_request(body, header_length, sig, max_rows)


def _raw(doc: dict[str, Any], tail: bytes = b"") -> tuple[bytes, int | None]:
    head = json.dumps(doc).encode()
    return head + tail, len(head) if tail else None


def _decode(body: bytes, headers: dict[str, str]) -> InferResult:
    """Decode a response as tritonclient does, from the headers we would send."""
    length = headers.get("inference-header-content-length")
    return InferenceServerClient.parse_response_body(
        body, verbose=False, header_length=None if length is None else int(length), content_encoding=None
    )


def _sig(in_type: str, out_type: str = "FP32", shape: list[int] | None = None) -> Signature:
    shape = shape or [-1, 3]
    return Signature(
        inputs=[TensorSpec(name="x", datatype=in_type, shape=shape)],  # type: ignore[arg-type]
        outputs=[TensorSpec(name="y", datatype=out_type, shape=shape)],  # type: ignore[arg-type]
    )


# ---- inputs: every datatype, JSON and binary -----------------------------------------

NUMERIC_INPUTS = [
    ("FP32", "FP32", np.array([[0.5, -1.25, 3.0]], dtype=np.float32)),
    ("FP32", "FP64", np.array([[0.1, -2.5, 1e10]], dtype=np.float64)),
    ("FP32", "FP16", np.array([[0.5, -1.0, 2.0]], dtype=np.float16)),
    ("FP32", "INT64", np.array([[1, -2, 3]], dtype=np.int64)),
    ("FP32", "INT8", np.array([[1, -2, 127]], dtype=np.int8)),
    ("FP64", "INT16", np.array([[1, -2, 300]], dtype=np.int16)),
    ("FP64", "UINT8", np.array([[1, 2, 255]], dtype=np.uint8)),
    ("INT32", "INT32", np.array([[1, -2, 2**31 - 1]], dtype=np.int32)),
    ("INT64", "INT64", np.array([[7, -8, 9], [1, 2, 3]], dtype=np.int64)),
    ("INT64", "INT32", np.array([[7, -8, 9]], dtype=np.int32)),
    ("INT64", "UINT8", np.array([[0, 1, 200]], dtype=np.uint8)),
    ("BOOL", "BOOL", np.array([[True, False, True]])),
]


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize(("sig_type", "wire_type", "arr"), NUMERIC_INPUTS)
def test_numeric_inputs_arrive_as_the_signature_type(
    sig_type: str, wire_type: str, arr: np.ndarray, binary: bool
):
    body, length = _encode([_input("x", arr, wire_type, binary)])
    assert (length is not None) == binary
    req = _parse(body, length, _sig(sig_type))
    x = req.inputs["x"]
    expected = {"INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_}.get(sig_type, np.float32)
    assert x.dtype == expected and x.shape == arr.shape
    np.testing.assert_array_equal(x, arr.astype(expected))
    assert req.rows == arr.shape[0]


@pytest.mark.parametrize("binary", [False, True])
def test_bytes_inputs_round_trip_with_utf8(binary: bool):
    words = np.array([["héllo", "日本語"], ["", "a\x00b"]], dtype=object)
    body, length = _encode([_input("x", words, "BYTES", binary)])
    req = _parse(body, length, _sig("BYTES", "BYTES", [-1, 2]))
    x = req.inputs["x"]
    assert x.dtype == object and x.shape == (2, 2)
    assert x.tolist() == [["héllo".encode(), "日本語".encode()], [b"", b"a\x00b"]]


def test_raw_bytes_input_is_kept_byte_for_byte():
    blob = np.array([[b"\xff\xfe", b"\x00"]], dtype=object)
    body, length = _encode([_input("x", blob, "BYTES", True)])
    assert _parse(body, length, _sig("BYTES", "BYTES", [-1, 2])).inputs["x"].tolist() == [
        [b"\xff\xfe", b"\x00"]
    ]


def test_binary_and_json_inputs_mix_in_one_request():
    a = np.array([[1.5, 2.5], [3.5, 4.5]], dtype=np.float32)
    b = np.array([10, 20], dtype=np.int64)
    body, length = _encode([_input("b", b, "INT64", False), _input("a", a, "FP32", True)])
    req = _parse(body, length, TWO_INPUTS)
    np.testing.assert_array_equal(req.inputs["a"], a)
    np.testing.assert_array_equal(req.inputs["b"], b.astype(np.float32))
    assert req.rows == 2


def test_two_binary_inputs_are_read_in_header_order():
    a = np.array([[1, 2], [3, 4]], dtype=np.float32)
    b = np.array([5, 6], dtype=np.int64)
    body, length = _encode([_input("b", b, "INT64", True), _input("a", a, "FP32", True)])
    req = _parse(body, length, TWO_INPUTS)
    assert req.inputs["a"].tolist() == [[1, 2], [3, 4]] and req.inputs["b"].tolist() == [5, 6]


def test_nested_and_flat_json_data_are_both_accepted():
    for data in ([[0, 1, 2, 3], [4, 5, 6, 7]], list(range(8))):
        body, length = _raw(
            {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": data}]}
        )
        assert _parse(body, length).inputs["input"].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_id_and_parameters_are_kept():
    body, length = _encode([_input("input", X, "FP32", True)], request_id="r-1", parameters={"k": "v"})
    req = _parse(body, length)
    assert req.id == "r-1"
    assert req.parameters == {"k": "v", "binary_data_output": True}


def test_header_length_equal_to_a_json_body_is_fine():
    body, _ = _encode([_input("input", X, "FP32", False)])
    np.testing.assert_array_equal(_parse(body, len(body)).inputs["input"], X)


# ---- requested outputs -----------------------------------------------------------------


def test_no_outputs_named_means_all_binary_as_tritonclient_asks():
    body, length = _encode([_input("input", X, "FP32", True)])
    assert _parse(body, length).outputs == [
        RequestedOutput("label", True),
        RequestedOutput("probabilities", True),
    ]


def test_no_outputs_and_no_parameters_means_all_json():
    body, length = _raw(
        {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": X.tolist()}]}
    )
    assert _parse(body, length).outputs == [
        RequestedOutput("label", False),
        RequestedOutput("probabilities", False),
    ]


@pytest.mark.parametrize(("label_binary", "probs_binary"), [(False, False), (True, False), (False, True)])
def test_requested_outputs_carry_their_binary_flag(label_binary: bool, probs_binary: bool):
    outputs = [
        InferRequestedOutput("probabilities", binary_data=probs_binary),
        InferRequestedOutput("label", binary_data=label_binary),
    ]
    body, length = _encode([_input("input", X, "FP32", False)], outputs=outputs)
    assert _parse(body, length).outputs == [
        RequestedOutput("probabilities", probs_binary),
        RequestedOutput("label", label_binary),
    ]


@pytest.mark.parametrize("default", [False, True])
def test_binary_data_output_is_the_default_a_per_output_flag_overrides(default: bool):
    body, length = _raw(
        {
            "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": X.tolist()}],
            "parameters": {"binary_data_output": default},
            "outputs": [{"name": "label"}, {"name": "probabilities", "parameters": {"binary_data": False}}],
        }
    )
    assert _parse(body, length).outputs == [
        RequestedOutput("label", default),
        RequestedOutput("probabilities", False),
    ]


# ---- responses -------------------------------------------------------------------------

OUTPUTS = [
    ("FP32", np.array([[0.1, 0.2, 0.7]], dtype=np.float32)),
    ("FP64", np.array([[0.1, 1e-300, -2.5]], dtype=np.float64)),
    ("INT32", np.array([[1, -2, 2**31 - 1]], dtype=np.int32)),
    ("INT64", np.array([[2**40, -1, 0]], dtype=np.int64)),
    ("BOOL", np.array([[True, False, True]])),
]


def _request(outputs: list[RequestedOutput], rid: str | None = None) -> InferRequest:
    return InferRequest(id=rid, parameters={}, inputs={}, rows=1, outputs=outputs)


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize(("datatype", "arr"), OUTPUTS)
def test_numeric_outputs_decode_in_tritonclient(datatype: str, arr: np.ndarray, binary: bool):
    sig = _sig("FP32", datatype)
    body, headers = encode_infer_response("m", "3", _request([RequestedOutput("y", binary)]), {"y": arr}, sig)
    result = _decode(body, headers)
    y = result.as_numpy("y")
    assert y.dtype == arr.dtype and y.shape == arr.shape
    np.testing.assert_array_equal(y, arr)
    assert result.get_response()["model_name"] == "m" and result.get_response()["model_version"] == "3"
    assert result.get_output("y")["datatype"] == datatype


@pytest.mark.parametrize("binary", [False, True])
def test_bytes_outputs_decode_in_tritonclient_as_utf8(binary: bool):
    labels = np.array([["chat", "café"], ["日本", ""]])  # a numpy str array, encoded as UTF-8
    sig = _sig("FP32", "BYTES", [-1, 2])
    body, headers = encode_infer_response(
        "m", "1", _request([RequestedOutput("y", binary)]), {"y": labels}, sig
    )
    y = _decode(body, headers).as_numpy("y")
    expected = [["chat", "café"], ["日本", ""]]
    assert y.tolist() == ([[s.encode() for s in row] for row in expected] if binary else expected)


def test_object_and_numeric_values_become_bytes_outputs():
    sig = _sig("FP32", "BYTES", [-1])
    values = np.array([b"\xff", "x", 3], dtype=object)
    body, headers = encode_infer_response(
        "m", "1", _request([RequestedOutput("y", True)]), {"y": values}, sig
    )
    assert _decode(body, headers).as_numpy("y").tolist() == [b"\xff", b"x", b"3"]


def test_output_datatype_comes_from_the_signature():
    sig = _sig("FP32", "INT64", [-1])
    out = {"y": np.array([1.0, 2.0], dtype=np.float32)}
    body, headers = encode_infer_response("m", "1", _request([RequestedOutput("y", False)]), out, sig)
    y = _decode(body, headers).as_numpy("y")
    assert y.dtype == np.int64 and y.tolist() == [1, 2]


def test_json_response_is_plain_json():
    out = {"label": np.array([2, 0]), "probabilities": np.eye(3, dtype=np.float32)[[2, 0]]}
    wanted = [RequestedOutput("label", False), RequestedOutput("probabilities", False)]
    body, headers = encode_infer_response("digits", "1", _request(wanted, "r-9"), out, SIG)
    assert headers == {"content-type": "application/json"}
    assert json.loads(body) == {
        "model_name": "digits",
        "model_version": "1",
        "id": "r-9",
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [2], "data": [2, 0]},
            {"name": "probabilities", "datatype": "FP32", "shape": [2, 3], "data": [0, 0, 1, 1, 0, 0]},
        ],
    }


def test_mixed_json_and_binary_response_decodes_in_tritonclient():
    out = {"label": np.array([2, 0, 1]), "probabilities": np.random.default_rng(0).random((3, 3), np.float32)}
    wanted = [RequestedOutput("probabilities", True), RequestedOutput("label", False)]
    body, headers = encode_infer_response("digits", "1", _request(wanted), out, SIG)
    head = json.loads(body[: int(headers["inference-header-content-length"])])
    assert headers["content-type"] == "application/octet-stream"
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 36}
    assert "data" not in head["outputs"][0] and head["outputs"][1]["data"] == [2, 0, 1]
    assert len(body) == int(headers["inference-header-content-length"]) + 36
    result = _decode(body, headers)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), out["probabilities"])
    np.testing.assert_array_equal(result.as_numpy("label"), out["label"])


def test_full_loop_through_tritonclient_both_ways():
    outputs = [InferRequestedOutput("label", binary_data=False), InferRequestedOutput("probabilities")]
    body, length = _encode([_input("input", X, "FP32", True)], outputs=outputs, request_id="abc")
    req = _parse(body, length)
    out = {"label": np.array([1, 2]), "probabilities": np.full((2, 3), 1 / 3, dtype=np.float32)}
    result = _decode(*encode_infer_response("digits", "4", req, out, SIG))
    assert result.get_response()["id"] == "abc"
    assert result.as_numpy("label").tolist() == [1, 2]
    np.testing.assert_array_equal(result.as_numpy("probabilities"), out["probabilities"])


def test_missing_model_output_is_an_internal_error():
    with pytest.raises(PlatformError, match="the model gave no output 'label'") as e:
        encode_infer_response("m", "1", _request([RequestedOutput("label", False)]), {}, SIG)
    assert type(e.value) is PlatformError


def test_non_utf8_bytes_output_cannot_be_json():
    sig = _sig("FP32", "BYTES", [-1])
    with pytest.raises(InvalidInput) as e:
        encode_infer_response(
            "m", "1", _request([RequestedOutput("y", False)]), {"y": np.array([b"\xff"])}, sig
        )
    assert e.value.message == "output 'y' is not UTF-8 text; request it with binary_data"


# ---- validation ----------------------------------------------------------------------


def _json_input(data: Any = None, shape: list[int] | None = None, datatype: str = "FP32", **kw: Any) -> dict:
    shape = [2, 4] if shape is None else shape
    data = X.tolist() if data is None else data
    return {"name": "input", "shape": shape, "datatype": datatype, "data": data, **kw}


def _binary_request(arr: np.ndarray, datatype: str = "FP32", name: str = "input") -> tuple[bytes, int]:
    body, length = _encode([_input(name, arr, datatype, True)])
    assert length is not None
    return body, length


def _with_size(size: int, tail: bytes) -> tuple[bytes, int | None]:
    entry = {"name": "input", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": size}}
    return _raw({"inputs": [entry]}, tail)


NAN_X = X.copy()
NAN_X[1, 2] = np.nan
BIN_BODY, BIN_LEN = _binary_request(X)

INVALID: list[tuple[str, tuple[bytes, int | None], str]] = [
    (
        "malformed",
        (b'{"inputs": [', None),
        "malformed JSON: Expecting value: line 1 column 13 (char 12)",
    ),
    ("not an object", (b"[1, 2]", None), "malformed JSON: the request must be an object"),
    (
        "not utf-8",
        (b'{"id": "\xff"}', None),
        "malformed JSON: 'utf-8' codec can't decode byte 0xff in position 8: invalid start byte",
    ),
    ("header too long", (b"{}", 3), "Inference-Header-Content-Length 3 is larger than the body (2 bytes)"),
    ("header negative", (b"{}", -1), "Inference-Header-Content-Length must not be negative, got -1"),
    ("missing inputs", _raw({"outputs": []}), "missing 'inputs'"),
    ("empty inputs", _raw({"inputs": []}), "'inputs' must be a non-empty list"),
    (
        "nameless input",
        _raw({"inputs": [{"shape": [1]}]}),
        "each entry of 'inputs' must be an object with a 'name'",
    ),
    ("unknown input", _raw({"inputs": [_json_input(), {**_json_input(), "name": "x"}]}), ""),
    ("duplicate input", _raw({"inputs": [_json_input(), _json_input()]}), "duplicate input 'input'"),
    ("id", _raw({"id": 7, "inputs": [_json_input()]}), "'id' must be a string"),
    ("parameters", _raw({"parameters": [], "inputs": [_json_input()]}), "'parameters' must be an object"),
    ("bytes for fp32", _raw({"inputs": [_json_input(datatype="BYTES")]}), ""),
    ("no datatype", _raw({"inputs": [_json_input(datatype=None)]}), ""),
    ("rank", _raw({"inputs": [_json_input(shape=[2, 4, 1])]}), ""),
    ("width", _raw({"inputs": [_json_input(shape=[2, 3])]}), ""),
    (
        "shape type",
        _raw({"inputs": [_json_input(shape=[2, "4"])]}),
        "input 'input': 'shape' must be a list of integers",
    ),
    ("empty dim", _raw({"inputs": [_json_input(shape=[0, 4], data=[])]}), ""),
    ("negative dim", _raw({"inputs": [_json_input(shape=[-1, 4])]}), ""),
    ("max rows", _raw({"inputs": [_json_input(shape=[9, 4], data=[0.0] * 36)]}), ""),
    ("count", _raw({"inputs": [_json_input(data=[1.0] * 7)]}), ""),
    ("ragged count", _raw({"inputs": [_json_input(data=[[1.0] * 4, [1.0] * 5])]}), ""),
    ("string in fp32", _raw({"inputs": [_json_input(data=[*[1.0] * 7, "a"])]}), ""),
    ("bool in fp32", _raw({"inputs": [_json_input(data=[*[1.0] * 7, True])]}), ""),
    ("null in fp32", _raw({"inputs": [_json_input(data=[*[1.0] * 7, None])]}), ""),
    ("data not a list", _raw({"inputs": [_json_input(data=3.0, shape=[1, 4])]}), ""),
    ("no data", _raw({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32"}]}), ""),
    ("nan json", (json.dumps({"inputs": [_json_input(data=NAN_X.tolist())]}).encode(), None), ""),
    ("inf binary", _binary_request(np.where(X > 0.5, np.inf, X).astype(np.float32)), ""),
    ("nan binary", _binary_request(NAN_X), ""),
    ("huge json int", _raw({"inputs": [_json_input(data=[*[1.0] * 7, 10**400])]}), ""),
    (
        "huge json float",
        (json.dumps({"inputs": [_json_input()]}).replace("0.875", "1e400").encode(), None),
        "",
    ),
    ("fp64 overflow", _binary_request(np.full((2, 4), 1e300), "FP64"), ""),
    ("size mismatch", _with_size(31, b"\x00" * 31), ""),
    ("size type", _with_size(-4, b""), "input 'input': binary_data_size must be a non-negative integer"),
    ("tail too long", (BIN_BODY + b"\x00", BIN_LEN), ""),
    ("tail too short", (BIN_BODY[:-1], BIN_LEN), ""),
    ("no header length", (BIN_BODY[:BIN_LEN], None), ""),
    (
        "binary, no header length",
        (BIN_BODY, None),
        "malformed JSON: 'utf-8' codec can't decode byte 0x80 in position 149: invalid start byte",
    ),
    (
        "both data and size",
        _raw({"inputs": [_json_input(parameters={"binary_data_size": 32})]}, b"\x00" * 32),
        "",
    ),
    ("shared memory", _raw({"inputs": [_json_input(parameters={"shared_memory_region": "r"})]}), ""),
    ("unknown output", _raw({"inputs": [_json_input()], "outputs": [{"name": "logits"}]}), ""),
    ("duplicate output", _raw({"inputs": [_json_input()], "outputs": [{"name": "label"}] * 2}), ""),
    (
        "outputs type",
        _raw({"inputs": [_json_input()], "outputs": {"name": "label"}}),
        "'outputs' must be a list",
    ),
    (
        "binary flag type",
        _raw({"inputs": [_json_input()], "outputs": [{"name": "label", "parameters": {"binary_data": 1}}]}),
        "output 'label': binary_data must be true or false",
    ),
    (
        "binary output flag type",
        _raw({"inputs": [_json_input()], "parameters": {"binary_data_output": "yes"}}),
        "'parameters': binary_data_output must be true or false",
    ),
    (
        "classification",
        _raw(
            {"inputs": [_json_input()], "outputs": [{"name": "label", "parameters": {"classification": 2}}]}
        ),
        "output 'label': shared memory and classification are not supported",
    ),
]
MESSAGES = {
    "unknown input": "unknown input 'x'; the model takes input",
    "bytes for fp32": "input 'input': datatype BYTES is not supported here; send FP32",
    "no datatype": "input 'input': datatype None is not supported here; send FP32",
    "rank": "input 'input': shape [2, 4, 1] does not match the expected [-1, 4]",
    "width": "input 'input': shape [2, 3] does not match the expected [-1, 4]",
    "empty dim": "input 'input': shape [0, 4] has an empty dimension",
    "negative dim": "input 'input': shape [-1, 4] has an empty dimension",
    "max rows": "input 'input': batch of 9; at most 8 per request",
    "count": "input 'input': shape [2, 4] needs 8 values, got 7",
    "ragged count": "input 'input': shape [2, 4] needs 8 values, got 9",
    "string in fp32": "input 'input': data is not all FP32 (found 'a')",
    "bool in fp32": "input 'input': data is not all FP32 (found True)",
    "null in fp32": "input 'input': data is not all FP32 (found None)",
    "data not a list": "input 'input': 'data' must be a list",
    "no data": "input 'input': needs either 'data' or parameters.binary_data_size",
    "nan json": "input 'input' contains NaN or infinity",
    "inf binary": "input 'input' contains NaN or infinity",
    "nan binary": "input 'input' contains NaN or infinity",
    "fp64 overflow": "input 'input' contains NaN or infinity",
    "huge json int": "input 'input' contains NaN or infinity",
    "huge json float": "input 'input' contains NaN or infinity",
    "size mismatch": "input 'input': binary_data_size 31 does not match shape [2, 4] of FP32 (32 bytes)",
    "tail too long": "binary data: the inputs declare 32 bytes; the body has 33 after the JSON header",
    "tail too short": "binary data: the inputs declare 32 bytes; the body has 31 after the JSON header",
    "no header length": "binary data: the inputs declare 32 bytes; the body has 0 after the JSON header",
    "both data and size": "input 'input': needs either 'data' or parameters.binary_data_size",
    "shared memory": "input 'input': shared memory is not supported; send the data in the body",
    "unknown output": "unknown output 'logits'; the model gives label, probabilities",
    "duplicate output": "duplicate output 'label'",
}


@pytest.mark.parametrize(("case", "request_", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_requests_are_named(case: str, request_: tuple[bytes, int | None], message: str):
    with pytest.raises(InvalidInput) as e:
        _parse(*request_)
    assert e.value.message == (message or MESSAGES[case])
    assert e.value.status == 400


def _typed_input(datatype: str, data: list[Any]) -> tuple[bytes, int | None]:
    return _raw({"inputs": [{"name": "x", "shape": [1, 3], "datatype": datatype, "data": data}]})


@pytest.mark.parametrize(
    ("sig_type", "request_", "message"),
    [
        (
            "INT64",
            _typed_input("FP32", [1, 2, 3]),
            "input 'x': datatype FP32 is not supported here; send INT64",
        ),
        (
            "INT64",
            _typed_input("BOOL", [True] * 3),
            "input 'x': datatype BOOL is not supported here; send INT64",
        ),
        (
            "FP32",
            _typed_input("UINT64", [1, 2, 3]),
            "input 'x': datatype UINT64 is not supported here; send FP32",
        ),
        (
            "BOOL",
            _typed_input("INT32", [1, 0, 1]),
            "input 'x': datatype INT32 is not supported here; send BOOL",
        ),
        (
            "BYTES",
            _typed_input("FP32", [1.0] * 3),
            "input 'x': datatype FP32 is not supported here; send BYTES",
        ),
        ("INT64", _typed_input("INT64", [1, 2.5, 3]), "input 'x': data is not all INT64 (found 2.5)"),
        ("INT32", _typed_input("INT32", [1, 2**31, 3]), "input 'x': 2147483648 is out of range for INT32"),
        ("INT64", _typed_input("UINT8", [1, -1, 3]), "input 'x': -1 is out of range for UINT8"),
        ("BOOL", _typed_input("BOOL", [True, 1, False]), "input 'x': data is not all BOOL (found 1)"),
        ("BYTES", _typed_input("BYTES", ["a", 1, "b"]), "input 'x': data is not all BYTES (found 1)"),
    ],
)
def test_datatype_and_value_errors(sig_type: str, request_: tuple[bytes, int | None], message: str):
    with pytest.raises(InvalidInput) as e:
        _parse(*request_, sig=_sig(sig_type))
    assert e.value.message == message


def _bytes_request(tail: bytes, count: int = 2) -> tuple[bytes, int | None]:
    entry = {
        "name": "x",
        "shape": [1, count],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(tail)},
    }
    return _raw({"inputs": [entry]}, tail)


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        (
            struct.pack("<I", 1) + b"a" + b"\x00\x00",
            "input 'x': binary BYTES data ends inside an element",
        ),
        (struct.pack("<I", 9) + b"abc", "input 'x': binary BYTES data ends inside an element"),
        (struct.pack("<I", 1) + b"a", "input 'x': shape [1, 2] needs 2 values, got 1"),
        (struct.pack("<I", 0) * 3, "input 'x': shape [1, 2] needs 2 values, got 3"),
    ],
)
def test_malformed_binary_bytes_are_refused(tail: bytes, message: str):
    with pytest.raises(InvalidInput) as e:
        _parse(*_bytes_request(tail), sig=_sig("BYTES", "BYTES", [-1, 2]))
    assert e.value.message == message


def test_missing_input_is_named():
    body, length = _encode([_input("a", np.ones((1, 2), np.float32), "FP32", False)])
    with pytest.raises(InvalidInput) as e:
        _parse(body, length, TWO_INPUTS)
    assert e.value.message == "missing input 'b'"


def test_inputs_must_share_their_first_dimension():
    a = np.ones((2, 2), np.float32)
    body, length = _encode([_input("a", a, "FP32", True), _input("b", np.ones(3, np.int64), "INT64", True)])
    with pytest.raises(InvalidInput) as e:
        _parse(body, length, TWO_INPUTS)
    assert e.value.message == "input 'b': first dimension 3 does not match 2 of input 'a'"
