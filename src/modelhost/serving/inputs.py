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
