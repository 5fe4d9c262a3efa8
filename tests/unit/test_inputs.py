from __future__ import annotations

import numpy as np
import pytest

from modelhost.errors import InvalidInput
from modelhost.registry.manifest import Signature, TensorSpec
from modelhost.serving.inputs import instances_to_array

SIG = Signature(
    inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 3])],
    outputs=[TensorSpec(name="prediction", datatype="FP32", shape=[-1])],
)


def test_instances_become_a_float32_batch() -> None:
    x = instances_to_array([[1, 2, 3], {"input": [4.5, 5, 6]}], SIG, max_instances=10)
    assert x.dtype == np.float32 and x.tolist() == [[1, 2, 3], [4.5, 5, 6]]
    fast = instances_to_array([[1, 2, 3], [4.5, 5, 6]], SIG, max_instances=10, may_hold_bools=False)
    assert fast.dtype == np.float32 and fast.tolist() == [[1, 2, 3], [4.5, 5, 6]]
    direct = instances_to_array(
        [[1, 2, 3], [4.5, 5, 6]], SIG, 10, may_hold_bools=False, may_hold_strings=False
    )
    assert direct.dtype == np.float32 and direct.tolist() == [[1, 2, 3], [4.5, 5, 6]]


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ([], "'instances' must be a non-empty list"),
        ("abc", "'instances' must be a non-empty list"),
        ([[1, 2]], "instances[0]: expected a list of 3 numbers for 'input', got 2 values"),
        ([[1, 2, 3], 7], "instances[1]: expected a list of 3 numbers for 'input', got int"),
        ([[1, "2", 3]], "instances[0]: '2' is not a number"),
        ([[1, True, 3]], "instances[0]: True is not a number"),
        ([{"x": [1, 2, 3]}], "instances[0]: expected the key 'input', got ['x']"),
        ([[1, 2, 3]] * 11, "'instances' has 11 items; at most 10 per request"),
        ([[1, 2, float("nan")]], "instances contain NaN or infinity"),
        ([[1, 2, 1e39]], "instances contain NaN or infinity"),
        ([[1, None, 3]], "instances[0]: None is not a number"),
        ([[1, 2, 3], [4, [5], 6]], "instances[1]: [5] is not a number"),
        ([[1, 2, 10**400]], "instances contain NaN or infinity"),
    ],
)
@pytest.mark.parametrize(
    ("may_hold_bools", "may_hold_strings"), [(True, True), (False, True), (False, False)]
)
def test_bad_instances_are_named(
    instances: object, message: str, may_hold_bools: bool, may_hold_strings: bool
) -> None:
    # the caller takes the vectorised paths only when the JSON text holds no true/false (and no strings)
    if ("True" in message and not may_hold_bools) or ("'2'" in message and not may_hold_strings):
        return
    with pytest.raises(InvalidInput) as e:
        instances_to_array(
            instances, SIG, 10, may_hold_bools=may_hold_bools, may_hold_strings=may_hold_strings
        )
    assert e.value.message == message
