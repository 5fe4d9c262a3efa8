"""Open Inference Protocol v2 request/response codec: JSON tensors and Triton's binary tensor data.

Binary form: the body is the JSON header (``Inference-Header-Content-Length`` bytes), then the raw
data of each tensor whose header carries ``parameters.binary_data_size``, in header order; row-major
and little-endian, BOOL one byte per element, a BYTES element a 4-byte length and then its bytes.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelhost.errors import InvalidInput, PlatformError
from modelhost.registry.manifest import Signature, TensorSpec

_FLOAT_WIRE = {"FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
_INT_WIRE = {"INT8": "i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "UINT8": "u1"}
_WIRE_DTYPES = {**_FLOAT_WIRE, **_INT_WIRE, "BOOL": "u1"}  # numpy dtype of each datatype's binary form
_FLOATS, _INTS = frozenset(_FLOAT_WIRE), frozenset(_INT_WIRE)
# The request datatypes each signature datatype converts from; BOOL and BYTES take only themselves.
_ACCEPTS = {"FP32": _FLOATS | _INTS, "FP64": _FLOATS | _INTS, "INT32": _INTS, "INT64": _INTS}


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A validated inference request: every signature input present, one shared batch size."""

    id: str | None
    parameters: dict[str, Any]
    inputs: dict[str, np.ndarray]
    """float32 for numeric signature inputs; object arrays of ``bytes`` for BYTES ones."""
    rows: int
    """The shared first dimension (batch size)."""
    outputs: list[RequestedOutput]
    """All of the signature's outputs when the request names none."""


@dataclass(frozen=True)
class _Tensor:
    """One entry of the request's ``inputs``, checked but not decoded yet."""

    name: str
    datatype: str
    shape: list[int]
    data: Any
    binary_size: int | None


def parse_infer_request(
    body: bytes, header_length: int | None, signature: Signature, max_rows: int
) -> InferRequest:
    """Parse and validate an OIP v2 ``/infer`` body against ``signature``.

    ``header_length`` is the ``Inference-Header-Content-Length`` header (None when absent:
    the whole body is JSON). Raises :class:`InvalidInput`, whose message names the input or
    output at fault and what was expected, for any malformed or mismatched request.
    """
    view = memoryview(body)
    split = len(body) if header_length is None else _check_header_length(header_length, len(body))
    doc = _load_json(view[:split])
    tensors = _input_tensors(doc, signature, max_rows)
    rows = _shared_rows(tensors)
    outputs = _requested_outputs(doc, signature)
    blobs = _binary_sections(tensors, view[split:])
    declared = {spec.name: spec.datatype for spec in signature.inputs}
    inputs = {t.name: _decode(t, blobs.get(t.name), declared[t.name]) for t in tensors}
    return InferRequest(_request_id(doc), _object(doc, "parameters", "'parameters'"), inputs, rows, outputs)


def encode_infer_response(
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: dict[str, np.ndarray],
    signature: Signature,
) -> tuple[bytes, dict[str, str]]:
    """The response body for ``request.outputs`` and the headers to send with it.

    Each output is converted to its signature datatype. Returns ``application/json`` when
    every output is JSON, else ``application/octet-stream`` plus the
    ``inference-header-content-length`` header. Raises :class:`InvalidInput` when a BYTES
    output requested as JSON is not UTF-8, and :class:`PlatformError` when the model did
    not give a requested output or gave values that do not convert to its datatype.
    """
    specs = {t.name: t for t in signature.outputs}
    entries, blobs = [], []
    for wanted in request.outputs:
        if wanted.name not in outputs:
            raise PlatformError(f"the model gave no output {wanted.name!r}")
        entry, blob = _encode_output(wanted, specs[wanted.name], outputs[wanted.name])
        entries.append(entry)
        blobs.append(blob)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = entries
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not any(o.binary for o in request.outputs):
        return head, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(len(head))}
    return head + b"".join(blobs), headers


def _check_header_length(header_length: int, body_length: int) -> int:
    if header_length < 0:
        raise InvalidInput(f"Inference-Header-Content-Length must not be negative, got {header_length}")
    if header_length > body_length:
        raise InvalidInput(
            f"Inference-Header-Content-Length {header_length} is larger than the body ({body_length} bytes)"
        )
    return header_length


def _load_json(header: memoryview) -> dict[str, Any]:
    try:
        doc = json.loads(bytes(header))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError too
        raise InvalidInput(f"malformed JSON: {e}") from e
    if not isinstance(doc, dict):
        raise InvalidInput("malformed JSON: the request must be an object")
    return doc


def _object(doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be an object")
    return value


def _request_id(doc: dict[str, Any]) -> str | None:
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise InvalidInput("'id' must be a string")
    return rid


def _input_tensors(doc: dict[str, Any], signature: Signature, max_rows: int) -> list[_Tensor]:
    if "inputs" not in doc:
        raise InvalidInput("missing 'inputs'")
    entries = doc["inputs"]
    if not isinstance(entries, list) or not entries:
        raise InvalidInput("'inputs' must be a non-empty list")
    specs = {t.name: t for t in signature.inputs}
    tensors: dict[str, _Tensor] = {}
    for entry in entries:
        tensor = _input_tensor(entry, specs, max_rows)
        if tensor.name in tensors:
            raise InvalidInput(f"duplicate input {tensor.name!r}")
        tensors[tensor.name] = tensor
    for name in specs:
        if name not in tensors:
            raise InvalidInput(f"missing input {name!r}")
    return list(tensors.values())


def _input_tensor(entry: Any, specs: dict[str, TensorSpec], max_rows: int) -> _Tensor:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise InvalidInput("each entry of 'inputs' must be an object with a 'name'")
    name = entry["name"]
    if name not in specs:
        raise InvalidInput(f"unknown input {name!r}; the model takes {', '.join(specs)}")
    spec, datatype, shape = specs[name], entry.get("datatype"), entry.get("shape")
    if not isinstance(datatype, str) or datatype not in _ACCEPTS.get(spec.datatype, {spec.datatype}):
        raise InvalidInput(f"input {name!r}: datatype {datatype} is not supported here; send {spec.datatype}")
    if not isinstance(shape, list) or not all(type(d) is int for d in shape):
        raise InvalidInput(f"input {name!r}: 'shape' must be a list of integers")
    _check_shape(name, shape, spec, max_rows)
    params = _object(entry, "parameters", f"input {name!r}: 'parameters'")
    if "shared_memory_region" in params:
        raise InvalidInput(f"input {name!r}: shared memory is not supported; send the data in the body")
    size = params.get("binary_data_size")
    if (size is None) == ("data" not in entry):
        raise InvalidInput(f"input {name!r}: needs either 'data' or parameters.binary_data_size")
    if size is not None and (type(size) is not int or size < 0):
        raise InvalidInput(f"input {name!r}: binary_data_size must be a non-negative integer")
    tensor = _Tensor(name, datatype, shape, entry.get("data"), size)
    if size is not None and datatype != "BYTES" and size != _nbytes(tensor):
        raise InvalidInput(
            f"input {name!r}: binary_data_size {size} does not match shape {shape} "
            f"of {datatype} ({_nbytes(tensor)} bytes)"
        )
    return tensor


def _check_shape(name: str, shape: list[int], spec: TensorSpec, max_rows: int) -> None:
    if len(shape) != len(spec.shape) or any(e not in (-1, g) for e, g in zip(spec.shape, shape, strict=True)):
        raise InvalidInput(f"input {name!r}: shape {shape} does not match the expected {spec.shape}")
    if any(d < 1 for d in shape):
        raise InvalidInput(f"input {name!r}: shape {shape} has an empty dimension")
    if shape and shape[0] > max_rows:
        raise InvalidInput(f"input {name!r}: batch of {shape[0]}; at most {max_rows} per request")


def _shared_rows(tensors: list[_Tensor]) -> int:
    first, rows = tensors[0], _rows(tensors[0])
    for t in tensors[1:]:
        if _rows(t) != rows:
            raise InvalidInput(
                f"input {t.name!r}: first dimension {_rows(t)} does not match {rows} of input {first.name!r}"
            )
    return rows


def _rows(t: _Tensor) -> int:
    return t.shape[0] if t.shape else 1


def _requested_outputs(doc: dict[str, Any], signature: Signature) -> list[RequestedOutput]:
    default = _flag(_object(doc, "parameters", "'parameters'"), "binary_data_output", "'parameters'")
    names = [t.name for t in signature.outputs]
    entries = doc.get("outputs") or []  # none named, or an empty list: every output
    if not isinstance(entries, list):
        raise InvalidInput("'outputs' must be a list")
    if not entries:
        return [RequestedOutput(name, default) for name in names]
    wanted: dict[str, RequestedOutput] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidInput("each entry of 'outputs' must be an object with a 'name'")
        name = entry["name"]
        if name not in names:
            raise InvalidInput(f"unknown output {name!r}; the model gives {', '.join(names)}")
        if name in wanted:
            raise InvalidInput(f"duplicate output {name!r}")
        params = _object(entry, "parameters", f"output {name!r}: 'parameters'")
        if "shared_memory_region" in params or "classification" in params:
            raise InvalidInput(f"output {name!r}: shared memory and classification are not supported")
        binary = default if "binary_data" not in params else _flag(params, "binary_data", f"output {name!r}")
        wanted[name] = RequestedOutput(name, binary)
    return list(wanted.values())


def _flag(params: dict[str, Any], key: str, where: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}: {key} must be true or false")
    return value


def _nbytes(t: _Tensor) -> int:
    return math.prod(t.shape) * np.dtype(_WIRE_DTYPES[t.datatype]).itemsize


def _binary_sections(tensors: list[_Tensor], tail: memoryview) -> dict[str, memoryview]:
    binary = [t for t in tensors if t.binary_size is not None]
    total = sum(t.binary_size or 0 for t in binary)
    if total != len(tail):
        raise InvalidInput(
            f"binary data: the inputs declare {total} bytes; the body has {len(tail)} after the JSON header"
        )
    sections, offset = {}, 0
    for t in binary:
        size = t.binary_size or 0
        sections[t.name] = tail[offset : offset + size]
        offset += size
    return sections


def _decode(t: _Tensor, blob: memoryview | None, target: str) -> np.ndarray:
    """The tensor as an array of the signature's type: float32 for FP32/FP64 inputs (what
    the models compute in), int64/int32 for INT ones (token ids stay exact), bool for BOOL."""
    if t.datatype == "BYTES":
        items = _split_bytes(t, blob) if blob is not None else [s.encode() for s in _json_values(t, str)]
        arr = np.empty(len(items), dtype=object)
        arr[:] = items
        return arr.reshape(t.shape)
    if blob is not None:
        raw = np.frombuffer(blob, dtype=_WIRE_DTYPES[t.datatype])
        values = raw != 0 if t.datatype == "BOOL" else raw
    else:
        values = _json_numbers(t)
    dtype = {"INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_}.get(target, np.float32)
    with np.errstate(over="ignore"):  # FP64 beyond float32 becomes inf, refused just below
        x: np.ndarray = np.asarray(values).astype(dtype).reshape(t.shape)
    if t.datatype in _FLOATS and not np.isfinite(x).all():
        raise InvalidInput(f"input {t.name!r} contains NaN or infinity")
    return x


def _split_bytes(t: _Tensor, blob: memoryview) -> list[bytes]:
    items, offset = [], 0
    while offset < len(blob):
        n = struct.unpack_from("<I", blob, offset)[0] if offset + 4 <= len(blob) else len(blob)
        if offset + 4 + n > len(blob):
            raise InvalidInput(f"input {t.name!r}: binary BYTES data ends inside an element")
        items.append(bytes(blob[offset + 4 : offset + 4 + n]))
        offset += 4 + n
    if len(items) != math.prod(t.shape):
        raise InvalidInput(
            f"input {t.name!r}: shape {t.shape} needs {math.prod(t.shape)} values, got {len(items)}"
        )
    return items


def _flatten(name: str, data: Any) -> list[Any]:
    """Flat or nested lists, flattened row-major; iterative, so deep nesting cannot recurse."""
    if not isinstance(data, list):
        raise InvalidInput(f"input {name!r}: 'data' must be a list")
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            flat.append(v)
        else:
            stack.pop()
    return flat


def _json_values(t: _Tensor, ok: type | tuple[type, ...]) -> list[Any]:
    flat = _flatten(t.name, t.data)
    needed = math.prod(t.shape)
    if len(flat) != needed:
        raise InvalidInput(f"input {t.name!r}: shape {t.shape} needs {needed} values, got {len(flat)}")
    for v in flat:  # JSON true/false are Python bools, which are ints too
        if not isinstance(v, ok) or (isinstance(v, bool) and ok is not bool):
            raise InvalidInput(f"input {t.name!r}: data is not all {t.datatype} (found {repr(v)[:40]})")
    return flat


def _json_numbers(t: _Tensor) -> np.ndarray:
    if t.datatype == "BOOL":
        return np.asarray(_json_values(t, bool), dtype=np.bool_)
    if t.datatype in _FLOATS:
        values = _json_values(t, (int, float))
        try:
            return np.asarray(values, dtype=np.float64)
        except OverflowError as e:  # an integer literal beyond float64: as infinite as 1e400
            raise InvalidInput(f"input {t.name!r} contains NaN or infinity") from e
    flat = _json_values(t, int)
    info = np.iinfo(_WIRE_DTYPES[t.datatype])
    bad = next((v for v in flat if not info.min <= v <= info.max), None)
    if bad is not None:
        raise InvalidInput(f"input {t.name!r}: {bad} is out of range for {t.datatype}")
    return np.asarray(flat, dtype=np.int64)


def _encode_output(
    wanted: RequestedOutput, spec: TensorSpec, arr: np.ndarray
) -> tuple[dict[str, Any], bytes]:
    arr = np.asarray(arr)
    entry: dict[str, Any] = {"name": spec.name, "datatype": spec.datatype, "shape": list(arr.shape)}
    if spec.datatype == "BYTES":
        items = [_as_bytes(v) for v in arr.reshape(-1).tolist()]
        if not wanted.binary:
            entry["data"] = [_as_text(spec.name, b) for b in items]
            return entry, b""
        blob = b"".join(struct.pack("<I", len(b)) + b for b in items)
    else:
        typed = _typed(spec, arr)
        if not wanted.binary:
            entry["data"] = typed.reshape(-1).tolist()
            return entry, b""
        blob = typed.tobytes()
    entry["parameters"] = {"binary_data_size": len(blob)}
    return entry, blob


def _typed(spec: TensorSpec, arr: np.ndarray) -> np.ndarray:
    """``arr`` as the signature's datatype, little-endian (BOOL as numpy bool: one byte, 0 or 1)."""
    try:
        return arr.astype(np.bool_ if spec.datatype == "BOOL" else _WIRE_DTYPES[spec.datatype])
    except (TypeError, ValueError) as e:
        raise PlatformError(
            f"output {spec.name!r}: {arr.dtype} values do not convert to {spec.datatype}"
        ) from e


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return (value if isinstance(value, str) else str(value)).encode()


def _as_text(name: str, value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError as e:
        raise InvalidInput(f"output {name!r} is not UTF-8 text; request it with binary_data") from e
