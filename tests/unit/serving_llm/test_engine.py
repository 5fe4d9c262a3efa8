"""Continuous batching: sequences that join a running batch, prompts fed in chunks, and
sequences that leave early all produce exactly what each would alone (greedy)."""

from __future__ import annotations

import asyncio

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from modelhost.errors import InvalidInput, Overloaded
from modelhost.nn.llama import KVCache, LlamaConfig, LlamaForCausalLM
from modelhost.serving.llm.engine import Engine, EngineConfig, Output
from modelhost.serving.llm.sampling import SamplingParams


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tk = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    return tk


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def engine(model, tokenizer, **config) -> Engine:
    return Engine(
        model,
        lambda slots, length: KVCache.for_model(model, slots, length),
        tokenizer,
        eos_ids=[],
        config=EngineConfig(**{"max_seqs": 4, "max_len": 128, "max_waiting": 8, **config}),
    )


@torch.inference_mode()
def greedy_alone(model, prompt: list[int], n: int) -> list[int]:
    """The reference: no cache, no batch, the whole sequence every step."""
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


def run(e: Engine) -> None:
    while e.scheduler.busy:
        e.step()


GREEDY = SamplingParams(temperature=0, max_tokens=12)


def collect() -> tuple[dict[int, list[Output]], object]:
    got: dict[int, list[Output]] = {}

    def sink_for(key: int):
        return lambda out: got.setdefault(key, []).append(out)

    return got, sink_for


def test_batched_joining_and_chunked_sequences_equal_each_alone(model, tokenizer) -> None:
    e = engine(model, tokenizer, prefill_chunk=5)
    prompts = [
        tokenizer.encode(t).ids for t in ("Hello there", "A much longer prompt, fed in chunks of five", "x")
    ]
    got, sink_for = collect()
    e.submit(prompts[0], GREEDY, sink_for(0))
    e.submit(prompts[1], GREEDY, sink_for(1))
    for _ in range(4):  # the first two are under way when the third arrives
        e.step()
    e.submit(prompts[2], GREEDY, sink_for(2))
    run(e)
    for k, prompt in enumerate(prompts):
        tokens = [o.token_id for o in got[k]]
        assert tokens == greedy_alone(model, prompt, 12), k
        assert got[k][-1].finish_reason == "length" and got[k][-1].completion_tokens == 12
        assert "".join(o.text for o in got[k]) == tokenizer.decode(tokens)


def test_a_burst_of_prompts_is_prefilled_together_and_each_equals_alone(model, tokenizer) -> None:
    e = engine(model, tokenizer, prefill_chunk=64)
    texts = ("Hi", "A prompt of middling length", "Another one, rather longer than that", "x")
    prompts = [tokenizer.encode(t).ids for t in texts]
    got, sink_for = collect()
    for k, p in enumerate(prompts):
        e.submit(p, GREEDY, sink_for(k))
    plan = e.step()
    fits = max(k for k in range(1, 5) if k * max(map(len, prompts[:k])) <= 64)
    assert len(plan.prefill) == fits >= 2  # as many right-padded prompts as fit in one chunk
    assert plan.prefill_tokens == sum(map(len, prompts[: len(plan.prefill)]))
    assert sorted(got) == list(range(len(plan.prefill)))  # each has its first token already
    run(e)
    for k, prompt in enumerate(prompts):
        assert [o.token_id for o in got[k]] == greedy_alone(model, prompt, 12), k


@torch.inference_mode()
def test_right_padded_rows_prefill_as_each_alone_and_keep_only_their_tokens(model) -> None:
    rows = [[5, 6, 7, 8, 9], [11, 12], [13, 14, 15]]
    cache = KVCache.for_model(model, 3, 32)
    padded = torch.tensor([r + [0] * (5 - len(r)) for r in rows])
    lengths = torch.tensor([len(r) for r in rows])
    last = model(padded, cache=cache, last_only=True, lengths=lengths)
    assert cache.lengths.tolist() == [5, 2, 3]
    nxt = model(torch.tensor([[1], [2], [3]]), cache=cache, last_only=True)
    for i, r in enumerate(rows):
        assert torch.allclose(last[i, 0], model(torch.tensor([r]))[0, -1], atol=1e-5)
        assert torch.allclose(nxt[i, 0], model(torch.tensor([[*r, i + 1]]))[0, -1], atol=1e-5)


def test_a_finished_or_aborted_sequence_frees_its_slot_at_once(model, tokenizer) -> None:
    e = engine(model, tokenizer, max_seqs=1)
    got, sink_for = collect()
    first = e.submit([1, 2, 3], SamplingParams(temperature=0, max_tokens=50), sink_for(0))
    e.submit([4, 5, 6], GREEDY, sink_for(1))
    e.step()
    e.step()
    assert len(got[0]) == 2 and 1 not in got  # one slot: the second waits
    e.abort(first)
    plan = e.step()
    assert [s.id for s in plan.released] == [first[0].id] and plan.admitted
    run(e)
    assert [o.token_id for o in got[1]] == greedy_alone(model, [4, 5, 6], 12)
    assert len(got[0]) == 2  # nothing more was made for the aborted one


def test_stop_strings_and_stop_tokens_end_a_sequence(model, tokenizer) -> None:
    reference = greedy_alone(model, [10, 20, 30], 12)
    text = tokenizer.decode(reference)
    e = engine(model, tokenizer)
    got, sink_for = collect()
    e.submit(
        [10, 20, 30],
        SamplingParams(temperature=0, max_tokens=12, stop_token_ids=(reference[3],)),
        sink_for(0),
    )
    stop = text[4:6]
    e.submit([10, 20, 30], SamplingParams(temperature=0, max_tokens=12, stop=(stop,)), sink_for(1))
    run(e)
    assert [o.token_id for o in got[0]] == reference[:4] and got[0][-1].finish_reason == "stop"
    streamed = "".join(o.text for o in got[1])
    assert got[1][-1].finish_reason == "stop" and streamed == text[: text.index(stop)]


def test_seeded_sampling_is_reproducible_and_n_choices_differ(model, tokenizer) -> None:
    params = SamplingParams(temperature=1.0, max_tokens=10, seed=42)
    results = []
    for _ in range(2):
        e = engine(model, tokenizer)
        got, sink_for = collect()
        e.submit([7, 8, 9], params, sink_for(0), n=3)
        run(e)
        by_choice: dict[int, list[int]] = {}
        for o in got[0]:
            by_choice.setdefault(o.index, []).append(o.token_id)
        results.append(by_choice)
    assert results[0] == results[1] and len(results[0]) == 3
    assert len({tuple(v) for v in results[0].values()}) == 3


def test_limits_refuse_before_queueing(model, tokenizer) -> None:
    e = engine(model, tokenizer, max_waiting=2)
    with pytest.raises(InvalidInput, match="exceeds the context of 128 tokens"):
        e.submit([1] * 100, SamplingParams(max_tokens=50), lambda o: None)
    e.submit([1], GREEDY, lambda o: None)
    e.submit([1], GREEDY, lambda o: None)
    with pytest.raises(Overloaded):
        e.submit([1], GREEDY, lambda o: None)


def test_generate_streams_from_the_engine_thread_and_aborts_when_left(model, tokenizer) -> None:
    e = engine(model, tokenizer)

    async def main() -> tuple[list[int], int]:
        tokens = [o.token_id async for o in e.generate([3, 4, 5], GREEDY)]
        agen = e.generate([3, 4, 5], SamplingParams(temperature=0, max_tokens=100))
        async for _ in agen:
            break
        await agen.aclose()  # the client went away
        for _ in range(100):
            if not e.scheduler.busy:
                break
            await asyncio.sleep(0.01)
        return tokens, len(e.scheduler.running)

    try:
        tokens, running = asyncio.run(main())
    finally:
        e.stop()
    assert tokens == greedy_alone(model, [3, 4, 5], 12) and running == 0
