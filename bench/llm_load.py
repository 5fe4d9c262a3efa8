"""Load generator for bench/llm.py, run as its own process so it never shares the server's GIL.

``--concurrency C`` streams, each sending its next request as soon as its last one ends, until
``--requests`` have been sent in all; each request is a streaming ``POST /v1/completions`` (SSE)
made with httpx's asyncio client. Prints one JSON object: generated tokens/s over the whole
point (the tokens of every response's usage chunk, divided by the time from the first request
sent to the last response ended), time to first token (to the first chunk with text; also of
the first round alone, whose C requests arrive at once), the gaps
between chunks with text (inter-token latency), errors, and the first response's text.

    python bench/llm_load.py --url http://127.0.0.1:8000 --key KEY --model smol \\
        --prompt-ids '[1, 9690, 198]' --max-tokens 128 --concurrency 4 --requests 8
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np


@dataclass
class Response:
    sent: float
    chunks: list[float] = field(default_factory=list)
    """perf_counter() of each chunk that carried text."""
    text: list[str] = field(default_factory=list)
    tokens: int = 0
    ended: float = 0.0
    error: str | None = None


async def one(client: httpx.AsyncClient, body: dict[str, Any]) -> Response:
    r = Response(time.perf_counter())
    try:
        async with client.stream("POST", "/v1/completions", json=body) as stream:
            if stream.status_code != 200:
                r.error = f"HTTP {stream.status_code}: {(await stream.aread()).decode()[:300]}"
                return r
            async for line in stream.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    r.error = str(event["error"])[:300]
                for choice in event.get("choices") or ():
                    if choice.get("text"):
                        r.chunks.append(time.perf_counter())
                        r.text.append(choice["text"])
                if event.get("usage"):
                    r.tokens = int(event["usage"]["completion_tokens"])
    except httpx.HTTPError as e:
        r.error = f"{type(e).__name__}: {e}"
    finally:
        r.ended = time.perf_counter()
    return r


async def drive(args: argparse.Namespace) -> list[Response]:
    body = {
        "model": args.model, "prompt": json.loads(args.prompt_ids), "max_tokens": args.max_tokens,
        "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True},
    }  # fmt: skip
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    tickets = itertools.count()
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    # a serialising server keeps the last of C streams waiting C responses long: no read timeout
    timeout = httpx.Timeout(30.0, read=None)
    async with httpx.AsyncClient(
        base_url=args.url, headers=headers, limits=limits, timeout=timeout
    ) as client:

        async def stream() -> list[Response]:
            done = []
            while next(tickets) < args.requests:
                done.append(await one(client, body))
            return done

        per_stream = await asyncio.gather(*(stream() for _ in range(args.concurrency)))
    return sorted((r for s in per_stream for r in s), key=lambda r: r.sent)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    p50, p99 = np.percentile(np.array(values) * 1000, [50, 99])
    return {"p50": float(p50), "p99": float(p99)}


def summary(responses: list[Response], concurrency: int) -> dict[str, Any]:
    ok = [r for r in responses if r.error is None and r.chunks]
    wall = max(r.ended for r in responses) - min(r.sent for r in responses)
    tokens = sum(r.tokens for r in ok)
    gaps = [b - a for r in ok for a, b in itertools.pairwise(r.chunks)]
    return {
        "concurrency": concurrency,
        "requests": len(responses),
        "errors": len(responses) - len(ok),
        "error_sample": next((r.error for r in responses if r.error), None),
        "wall_s": wall,
        "tokens": tokens,
        "tokens_per_request": sorted({r.tokens for r in ok}),
        "tokens_per_s": tokens / wall,
        "ttft_ms": percentiles([r.chunks[0] - r.sent for r in ok]),
        # the first C requests arrive together; later ones, as earlier ones end (staggered)
        "ttft_first_round_ms": percentiles(
            [r.chunks[0] - r.sent for r in responses[:concurrency] if r in ok]
        ),
        "itl_ms": percentiles(gaps),
        # time per output token after the first: a stream's pace, whatever its chunks hold
        "tpot_ms": percentiles([(r.chunks[-1] - r.chunks[0]) / max(1, r.tokens - 1) for r in ok]),
        "latency_ms": percentiles([r.ended - r.sent for r in ok]),
        "first_text": "".join(responses[0].text),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", default="")
    parser.add_argument("--model", default="")
    parser.add_argument("--prompt-ids", required=True, help="the prompt's token ids, as JSON")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True)
    args = parser.parse_args()
    print(json.dumps(summary(asyncio.run(drive(args)), args.concurrency)))


if __name__ == "__main__":
    main()
