"""Request validation against a version's signature, before anything is queued.
Every error names the input (or instance) and what was expected."""

from __future__ import annotations

from typing import Any

import numpy as np

from modelhost.errors import InvalidInput
from modelhost.registry.manifest import Signature, TensorSpec

NUMPY_DTYPES = {
    "FP32": np.float32,
    "FP64": np.float64,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
}
_NUMERIC = ("FP32", "FP64", "INT32", "INT64", "BOOL")


def _feature_spec(signature: Signature) -> TensorSpec:
    return signature.inputs[0]


def instances_to_array(
    instances: Any, signature: Signature, max_instances: int, may_hold_bools: bool = True
) -> np.ndarray:
    """``{"instances": [[...], ...]}`` (or ``[{"input": [...]}, ...]``) as a float32 (N, F) array.

    ``may_hold_bools=False`` (the JSON text has no ``true``/``false``) allows a vectorised
    check: numpy would silently turn a bool among numbers into 0/1.
    """
    spec = _feature_spec(signature)
    width = spec.shape[-1]
    if not may_hold_bools and isinstance(instances, list) and 0 < len(instances) <= max_instances:
        try:  # fast path: a clean list of equal-length number lists; anything else gets named below
            fast = np.asarray(instances)
        except ValueError:
            fast = None
        if fast is not None and fast.dtype.kind in "iuf" and fast.shape == (len(instances), width):
            with np.errstate(over="ignore"):
                x = fast.astype(np.float32, copy=False)
            if np.isfinite(x).all():
                return x
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("'instances' must be a non-empty list")
    if len(instances) > max_instances:
        raise InvalidInput(f"'instances' has {len(instances)} items; at most {max_instances} per request")
    rows = []
    for i, inst in enumerate(instances):
        if isinstance(inst, dict):
            if set(inst) != {spec.name}:
                raise InvalidInput(f"instances[{i}]: expected the key {spec.name!r}, got {sorted(inst)}")
            inst = inst[spec.name]
        if not isinstance(inst, list) or len(inst) != width:
            got = f"{len(inst)} values" if isinstance(inst, list) else type(inst).__name__
            raise InvalidInput(
                f"instances[{i}]: expected a list of {width} numbers for {spec.name!r}, got {got}"
            )
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in inst):
            bad = next(v for v in inst if not isinstance(v, int | float) or isinstance(v, bool))
            raise InvalidInput(f"instances[{i}]: {bad!r} is not a number")
        rows.append(inst)
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused just below
        x = np.asarray(rows, dtype=np.float32)
    if not np.isfinite(x).all():
        raise InvalidInput("instances contain NaN or infinity")
    return x


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list) and data and isinstance(data[0], list):
        return [v for row in data for v in _flatten(row)]
    if not isinstance(data, list):
        raise InvalidInput("tensor 'data' must be a list")
    return data


def tensor_to_array(
    name: str, datatype: str, shape: list[int], data: Any, signature: Signature, max_instances: int
) -> np.ndarray:
    """An OIP v2 input tensor, checked against the signature, as a float32 array."""
    expected = {t.name: t for t in signature.inputs}
    if name not in expected:
        raise InvalidInput(f"unknown input {name!r}; the model takes {', '.join(expected)}")
    spec = expected[name]
    if datatype not in _NUMERIC:
        raise InvalidInput(f"input {name!r}: datatype {datatype} is not supported here; send {spec.datatype}")
    if len(shape) != len(spec.shape) or any(e not in (-1, g) for e, g in zip(spec.shape, shape, strict=True)):
        raise InvalidInput(f"input {name!r}: shape {shape} does not match the expected {spec.shape}")
    if any(d < 1 for d in shape):
        raise InvalidInput(f"input {name!r}: shape {shape} has an empty dimension")
    if shape[0] > max_instances:
        raise InvalidInput(f"input {name!r}: batch of {shape[0]}; at most {max_instances} per request")
    flat = _flatten(data)
    if len(flat) != int(np.prod(shape)):
        raise InvalidInput(
            f"input {name!r}: shape {shape} needs {int(np.prod(shape))} values, got {len(flat)}"
        )
    kinds = (bool,) if datatype == "BOOL" else (int,) if datatype.startswith("INT") else (int, float)
    if not all(isinstance(v, kinds) and (datatype == "BOOL" or not isinstance(v, bool)) for v in flat):
        raise InvalidInput(f"input {name!r}: data is not all {datatype}")
    arr: np.ndarray = np.asarray(flat, dtype=NUMPY_DTYPES[datatype]).reshape(shape).astype(np.float32)
    if not np.isfinite(arr).all():
        raise InvalidInput(f"input {name!r} contains NaN or infinity")
    return arr
