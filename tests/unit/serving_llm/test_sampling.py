"""Sampling: each row its own parameters; same seed, same tokens; filters keep what they promise."""

from __future__ import annotations

import math

import pytest
import torch

from modelhost.serving.llm.sampling import SamplingParams, SequenceState, apply_penalties, sample


def state(**params) -> SequenceState:
    return SequenceState(SamplingParams(**params), prompt_ids=[1, 2, 3])


def draws(logits: torch.Tensor, n: int, **params) -> list[int]:
    s = state(**params)
    return [sample(logits[None], [s]).tokens[0] for _ in range(n)]


LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -1.0, -3.0, -5.0])


def test_greedy_rows_take_the_argmax_beside_sampled_rows() -> None:
    batch = torch.stack([LOGITS, LOGITS.flip(0)])
    out = sample(batch, [state(temperature=0), state(temperature=1.0, seed=1)])
    assert out.tokens[0] == 0
    assert out.logprobs[0] == pytest.approx(float(torch.log_softmax(LOGITS, -1)[0]))


def test_the_same_seed_gives_the_same_tokens_and_another_seed_others() -> None:
    a, b, c = draws(LOGITS, 50, seed=7), draws(LOGITS, 50, seed=7), draws(LOGITS, 50, seed=8)
    assert a == b and a != c


def test_top_k_top_p_and_min_p_only_ever_pick_allowed_tokens() -> None:
    assert set(draws(LOGITS, 300, top_k=2, seed=0)) <= {0, 1}
    probs = torch.softmax(LOGITS, -1)
    # top_p = mass of the first two tokens minus a little: the second (which crosses it) stays
    p = float(probs[0] + probs[1]) - 1e-3
    assert set(draws(LOGITS, 300, top_p=p, seed=0)) == {0, 1}
    assert set(draws(LOGITS, 300, min_p=0.5, seed=0)) <= {0, 1}  # p >= half of the best
    assert len(set(draws(LOGITS, 2000, seed=0))) >= 6  # unfiltered, the tail is reachable


def test_temperature_sharpens_and_flattens() -> None:
    cold = draws(LOGITS, 400, temperature=0.1, seed=3)
    hot = draws(LOGITS, 400, temperature=3.0, seed=3)
    assert cold.count(0) > 390 and hot.count(0) < 200


def test_penalties_follow_their_definitions() -> None:
    s = SequenceState(
        SamplingParams(repetition_penalty=2.0, presence_penalty=0.5, frequency_penalty=0.25),
        prompt_ids=[0],
        output_ids=[1, 1, 5],
    )
    out = apply_penalties(LOGITS[None].clone(), [s])[0]
    assert out[0] == pytest.approx(2.0 / 2)  # in the prompt: positive logit divided
    assert out[1] == pytest.approx(1.5 / 2 - 0.5 - 2 * 0.25)  # twice in the output
    assert out[5] == pytest.approx(-1.0 * 2 - 0.5 - 0.25)  # negative logit multiplied
    assert out[2] == pytest.approx(1.0)  # never seen: untouched
    assert apply_penalties(LOGITS[None], [state()]) is not None


def test_logprobs_report_the_top_alternatives() -> None:
    out = sample(LOGITS[None], [state(temperature=0, logprobs=3)])
    assert out.top is not None and [t for t, _ in out.top[0]] == [0, 1, 2]
    assert math.isclose(
        sum(math.exp(v) for _, v in out.top[0]), float(torch.softmax(LOGITS, -1)[:3].sum()), rel_tol=1e-5
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ("",)}, "stop strings must not be empty"),
        ({"presence_penalty": 3}, "presence_penalty"),
    ],
)
def test_bad_params_are_refused_by_name(params, message) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingParams(**params)
