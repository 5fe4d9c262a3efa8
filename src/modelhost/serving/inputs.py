"""Request validation against a version's signature, before anything is queued.
Every error names the input (or instance) and what was expected."""

from __future__ import annotations

from typing import Any

import numpy as np

from modelhost.errors import InvalidInput
from modelhost.registry.manifest import Signature, TensorSpec


def _feature_spec(signature: Signature) -> TensorSpec:
    return signature.inputs[0]


def instances_to_array(
    instances: Any,
    signature: Signature,
    max_instances: int,
    may_hold_bools: bool = True,
    may_hold_strings: bool = True,
) -> np.ndarray:
    """``{"instances": [[...], ...]}`` (or ``[{"input": [...]}, ...]``) as a float32 (N, F) array.

    ``may_hold_bools=False`` (the JSON text has no ``true``/``false``) allows a vectorised
    check: numpy would silently turn a bool among numbers into 0/1. With
    ``may_hold_strings=False`` too (no string in the text but the key), numpy converts
    straight to float32, which would otherwise also read ``"2"`` as 2.
    """
    spec = _feature_spec(signature)
    if spec.datatype != "FP32" or len(spec.shape) != 2 or spec.shape[-1] < 0:
        return _shaped_instances(instances, spec, max_instances)
    width = spec.shape[-1]
    plain = not may_hold_bools and isinstance(instances, list) and 0 < len(instances) <= max_instances
    if plain and not may_hold_strings:
        try:  # JSON has no NaN; beyond float32 becomes inf and null NaN, refused just below
            with np.errstate(over="ignore"):
                direct: np.ndarray | None = np.asarray(instances, dtype=np.float32)
        except (ValueError, TypeError, OverflowError):  # ragged, nested, beyond float64
            direct = None
        if direct is not None and direct.shape == (len(instances), width) and np.isfinite(direct).all():
            return direct
    if plain:
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
    try:
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused just below
            x = np.asarray(rows, dtype=np.float32)
    except OverflowError:  # an integer beyond float64: as infinite as 1e400
        raise InvalidInput("instances contain NaN or infinity") from None
    if not np.isfinite(x).all():
        raise InvalidInput("instances contain NaN or infinity")
    return x


_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_}


def _shaped_instances(instances: Any, spec: TensorSpec, max_instances: int) -> np.ndarray:
    """Instances of any other signature: texts (BYTES), rows with text cells, images, sequences,
    token ids. Each instance must have the input's shape without its batch dimension (-1: any
    size, the same for every instance); the runtime's preprocessing does the rest."""
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("'instances' must be a non-empty list")
    if len(instances) > max_instances:
        raise InvalidInput(f"'instances' has {len(instances)} items; at most {max_instances} per request")
    items = [
        inst[spec.name] if isinstance(inst, dict) and set(inst) == {spec.name} else inst for inst in instances
    ]
    if spec.datatype == "BYTES":
        arr = np.empty(len(items), dtype=object)
        arr[:] = items
        if len(spec.shape) == 1:
            bad = next((i for i, v in enumerate(items) if not isinstance(v, str)), None)
            if bad is not None:
                raise InvalidInput(f"instances[{bad}]: expected a string for {spec.name!r}")
            return arr
        width = spec.shape[-1]
        for i, v in enumerate(items):
            if not isinstance(v, list) or len(v) != width:
                raise InvalidInput(f"instances[{i}]: expected a list of {width} values for {spec.name!r}")
        return np.array(items, dtype=object)
    try:
        with np.errstate(over="ignore"):
            arr = np.asarray(items, dtype=_DTYPES[spec.datatype])
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(
            f"instances: every instance of {spec.name!r} must be numbers of one shape "
            f"{['any' if d < 0 else d for d in spec.shape[1:]]}"
        ) from None
    want = spec.shape[1:]
    got: list[int] = list(arr.shape[1:])
    if len(got) != len(want) or any(w not in (-1, g) for w, g in zip(want, got, strict=True)):
        raise InvalidInput(
            f"instances: {spec.name!r} takes instances of shape {['any' if d < 0 else d for d in want]}, "
            f"got {got}"
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InvalidInput("instances contain NaN or infinity")
    return arr
