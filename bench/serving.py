"""Serving benchmark for predictive models: modelhost against a hand-written FastAPI server.

Registers the MNIST CNN and the small MLP (random weights: speed, not quality), starts the real
server (auth, validation, metrics on) and ``baseline_fastapi.py`` on the same weights, drives both
with wrk on loopback, measures the in-process ceiling, checks issue 4's targets, and writes
``bench/results/serving-<UTC>.json`` (and ``serving-latest.json``).

    .venv/bin/python bench/serving.py [--duration 10] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import inspect
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from modelhost.artifacts import open_artifacts
from modelhost.datasets.preprocessing import NoPreprocessing
from modelhost.db import Database
from modelhost.nn import build_model
from modelhost.registry.manifest import WEIGHTS_FILE, Manifest, Signature, TensorSpec
from modelhost.registry.service import register_version
from modelhost.serving.runtimes.torch import TorchRuntime

BENCH = Path(__file__).resolve().parent
ADMIN_KEY = "mh_bench_admin_key_0123456789abcdefghijklmnopqrstuvwxyz"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
CONCURRENCIES = (1, 8, 32, 128)
SERVER_THREADS = max(1, (os.cpu_count() or 2) - 1)  # modelhost's default: the event loop keeps a core
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)
BATCHING = {"max_batch_size": 64, "max_wait_ms": 0}
TO_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the architecture's, the model's and the deployment's
    config: dict[str, Any]
    features: int
    classes: list[int]
    task: str  # "classification": one logit per class, softmax; "binary": one logit, sigmoid


MODELS = (
    ModelSpec(
        "cnn", {"in_channels": 1, "image_size": 28, "num_classes": 10}, 784, list(range(10)), "classification"
    ),
    # the MLP: 100 features -> 64 -> 32 -> one logit, sigmoid
    ModelSpec(
        "mlp", {"in_features": 100, "out_features": 1, "hidden_sizes": [64, 32]}, 100, [0, 1], "binary"
    ),
)


def build(spec: ModelSpec, weights: Path | None = None) -> torch.nn.Module:

    torch.manual_seed(0)
    model = build_model(spec.name, spec.config)
    if weights is not None:
        model.load_state_dict(load_file(str(weights)), strict=True)
    return model.eval()


def manifest(spec: ModelSpec) -> Manifest:
    label = TensorSpec(name="label", datatype="INT64", shape=[-1])
    probabilities = TensorSpec(name="probabilities", datatype="FP32", shape=[-1, len(spec.classes)])
    inputs = [TensorSpec(name="input", datatype="FP32", shape=[-1, spec.features])]
    return Manifest(
        architecture=spec.name, config=spec.config, task=spec.task, classes=spec.classes,
        signature=Signature(inputs=inputs, outputs=[label, probabilities]), preprocessing=NoPreprocessing(),
    )  # fmt: skip


def register(home: Path, spec: ModelSpec, weights: Path) -> None:
    """Register version 1 of ``spec`` straight into the (not yet running) server's home."""
    db = Database(f"sqlite:///{home}/modelhost.db")
    db.migrate()
    data = weights.read_bytes()  # register_version is gaining `files`: pass what it takes
    takes_files = "files" in inspect.signature(register_version).parameters
    files = {"files": {WEIGHTS_FILE: data}} if takes_files else {"weights": data}
    with db.session() as s:
        register_version(s, open_artifacts((home / "artifacts").as_uri()), spec.name, manifest(spec), **files)
    db.dispose()


@torch.inference_mode()
def ceiling(spec: ModelSpec, weights: Path, seconds: float) -> dict[str, Any]:
    """Forward-only rows/s per batch size and the median single-row forward time, at the
    thread count the server's models use (SERVER_THREADS, passed to it as MODELHOST_TORCH_THREADS).

    The forward pass is the one the server runs (``TorchRuntime.forward``: a TorchScript trace
    of the module where one applies); the module's own, untraced, is measured beside it."""
    torch.set_num_threads(SERVER_THREADS)
    runtime = TorchRuntime(manifest(spec), weights.read_bytes())
    served: dict[int, list[float]] = {}
    module: dict[int, list[float]] = {}
    for b in BATCH_SIZES:  # the two in turn at each size, so a busy moment hits both alike
        x = torch.rand(b, spec.features)
        served[b], module[b] = call_times(runtime.forward, x, seconds), call_times(runtime.model, x, seconds)
    return {
        "torch_threads": torch.get_num_threads(),
        "forward": "torchscript trace" if runtime.traced is not None else "module",
        **rates(served),
        "module": rates(module),
    }


def rates(times: dict[int, list[float]]) -> dict[str, Any]:
    per_batch = {b: b * len(t) / sum(t) for b, t in times.items()}
    best = max(per_batch, key=lambda b: per_batch[b])
    return {
        "rows_per_s": {str(b): r for b, r in per_batch.items()},
        "best_rows_per_s": per_batch[best],
        "best_batch": best,
        "single_row_forward_ms": float(np.median(times[1])) * 1000,
    }


def call_times(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, seconds: float
) -> list[float]:
    times: list[float] = []
    end = time.perf_counter() + seconds
    while (start := time.perf_counter()) < end or len(times) < 30:
        forward(x)
        times.append(time.perf_counter() - start)
    return times[20:]  # the first calls warm up


@dataclass(frozen=True)
class Server:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far, all its threads (user + system)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def running(cmd: list[str], env: dict[str, str], log: Path, health: str) -> Iterator[Server]:
    """Run ``cmd`` ("PORT": a free port) until ``health`` answers 200, yield it; always stop it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    url, cmd = f"http://127.0.0.1:{port}", [port if arg == "PORT" else arg for arg in cmd]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + health, timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{' '.join(cmd[:4])} did not start:\n{log.read_text()}")
        yield Server(url, proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def modelhost(home: Path, workdir: Path) -> contextlib.AbstractContextManager[Server]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELHOST_")}
    env.update(MODELHOST_HOME=str(home), MODELHOST_ADMIN_KEY=ADMIN_KEY)
    env["MODELHOST_TORCH_THREADS"] = str(SERVER_THREADS)
    cmd = [sys.executable, "-m", "modelhost.cli", "up", "--port", "PORT"]
    return running(cmd, env, workdir / "modelhost.log", "/v2/health/ready")


def baseline(spec: ModelSpec, weights: Path, workdir: Path) -> contextlib.AbstractContextManager[Server]:
    cmd = [sys.executable, str(BENCH / "baseline_fastapi.py"), "--arch", spec.name,
           "--config", json.dumps(spec.config), "--weights", str(weights), "--port", "PORT"]  # fmt: skip
    return running(cmd, dict(os.environ), workdir / f"baseline-{spec.name}.log", "/health")


def instance(spec: ModelSpec) -> list[float]:
    """One realistic row: an MNIST-like image (80% blank pixels) or standardized features."""
    rng, n = np.random.default_rng(1), spec.features
    if spec.name == "cnn":
        return [float(v) for v in np.where(rng.random(n) < 0.8, 0.0, rng.random(n).round(3))]
    return [float(v) for v in rng.standard_normal(n).round(4)]


def wrk_script(path: Path, body: dict[str, Any], auth: bool) -> Path:
    lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"']
    if auth:
        lines.append(f'wrk.headers["Authorization"] = "{AUTH["Authorization"]}"')
    path.write_text("\n".join([*lines, f"wrk.body = [==[{json.dumps(body)}]==]", ""]))
    return path


def run_wrk(url: str, script: Path, concurrency: int, duration: float) -> dict[str, Any]:
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--latency", "--timeout", "10s",
           "-s", str(script), url]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=duration + 60)
    return parse_wrk(out.stdout)


def parse_wrk(out: str) -> dict[str, Any]:
    """requests/s, latency percentiles (ms) and errors (non-2xx + socket errors) from wrk."""
    found = re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    rps, requests = re.search(r"Requests/sec:\s+([\d.]+)", out), re.search(r"(\d+) requests in", out)
    if len(found) != 3 or rps is None or requests is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(rps[1]),
        "requests": int(requests[1]),
        **{f"p{p}_ms": float(n) * TO_MS[unit] for p, n, unit in found},
        "errors": (int(non2xx[1]) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0),
    }


def deploy(spec: ModelSpec, modelhost: str, baseline: str) -> None:
    """Deploy ``spec`` on modelhost; both servers hold the same weights, so check they agree."""
    put = {"model": spec.name, "batching": BATCHING}
    r = httpx.put(f"{modelhost}/api/v1/deployments/{spec.name}", json=put, headers=AUTH, timeout=120)
    r.raise_for_status()
    body = {"instances": [instance(spec)] * 3}
    a = httpx.post(f"{modelhost}/v1/models/{spec.name}:predict", json=body, headers=AUTH, timeout=30)
    b = httpx.post(f"{baseline}/predict", json=body, timeout=30)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert a.json()["predictions"] == b.json()["predictions"], (a.text, b.text)


Target = tuple[Server, str, Path]  # the server, the URL to load, the wrk script


def load_point(target: Target, concurrency: int, duration: float) -> dict[str, Any]:
    """One wrk run, plus the CPU the server used for it: cores, and microseconds per request
    (all its threads; a measure of work done that the machine's noise moves far less than
    requests/s)."""
    server, url, script = target
    cpu, start = server.cpu_seconds(), time.perf_counter()
    r = run_wrk(url, script, concurrency, duration)
    cpu, elapsed = server.cpu_seconds() - cpu, time.perf_counter() - start
    return {
        **r,
        "server_cpu_cores": cpu / elapsed,
        "server_cpu_us_per_request": cpu / max(1, r["requests"]) * 1e6,
    }


def load_matrix(targets: dict[str, dict[str, Target]], duration: float) -> dict[str, Any]:
    """Every model x concurrency; modelhost and the baseline alternate, so drift hits both."""
    for _, url, script in (t for pair in targets.values() for t in pair.values()):
        run_wrk(url, script, 8, min(duration, 3))  # warm-up
    out: dict[str, Any] = {m: {"modelhost": {}, "baseline": {}} for m in targets}
    for model, pair in targets.items():
        for c in CONCURRENCIES:
            for name, target in pair.items():
                out[model][name][str(c)] = r = load_point(target, c, duration)
                print(f"  {model} c={c:<4} {name:9} {r['rps']:6.0f} req/s  p99 {r['p99_ms']:.2f} ms  "
                      f"server CPU {r['server_cpu_us_per_request']:.0f} us/request")  # fmt: skip
    return out


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    (home := workdir / "home").mkdir()
    weights = {s.name: workdir / f"{s.name}.safetensors" for s in MODELS}
    for s in MODELS:
        save_file({k: v.contiguous() for k, v in build(s).state_dict().items()}, str(weights[s.name]))
        register(home, s, weights[s.name])
    ceilings = {s.name: ceiling(s, weights[s.name], 0.3 if args.quick else 2.0) for s in MODELS}
    with contextlib.ExitStack() as stack:
        mh, targets = stack.enter_context(modelhost(home, workdir)), {}
        for s in MODELS:
            bl = stack.enter_context(baseline(s, weights[s.name], workdir))
            deploy(s, mh.url, bl.url)
            body = {"instances": [instance(s)]}
            predict = f"{mh.url}/v1/models/{s.name}:predict"
            targets[s.name] = {
                "modelhost": (mh, predict, wrk_script(workdir / f"mh-{s.name}.lua", body, True)),
                "baseline": (bl, f"{bl.url}/predict", wrk_script(workdir / f"bl-{s.name}.lua", body, False)),
            }
        print(f"load: wrk -t1, {args.duration:g} s per point", flush=True)
        load = load_matrix(targets, args.duration)
        tensor = {"name": "input", "shape": [1, 784], "datatype": "FP32", "data": instance(MODELS[0])}
        v2 = wrk_script(workdir / "v2.lua", {"inputs": [tensor]}, True)
        oip = load_point((mh, f"{mh.url}/v2/models/cnn/infer", v2), 32, args.duration)
    models = {s.name: {**load[s.name], "ceiling": ceilings[s.name]} for s in MODELS}
    return {"models": models, "oip_v2_cnn_c32": oip}


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 4's targets. The ceiling is the best forward-only rows/s over batch sizes 1-128."""
    m, checks = res["models"], []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"target": name, "pass": ok, "detail": detail})

    for name, factor in (("cnn", 2), ("mlp", 3)):
        a, b = m[name]["modelhost"]["32"], m[name]["baseline"]["32"]
        ratio = a["rps"] / b["rps"]
        check(f"{name} c=32 req/s >= {factor}x baseline", ratio >= factor,
              f"{a['rps']:.0f} vs {b['rps']:.0f} req/s = {ratio:.2f}x")  # fmt: skip
        check(f"{name} c=32 p99 <= baseline p99", a["p99_ms"] <= b["p99_ms"],
              f"{a['p99_ms']:.2f} vs {b['p99_ms']:.2f} ms")  # fmt: skip
    rps, best, batch = (m["cnn"]["modelhost"]["32"]["rps"], m["cnn"]["ceiling"]["best_rows_per_s"],
                        m["cnn"]["ceiling"]["best_batch"])  # fmt: skip
    check("cnn c=32 >= 70% of the in-process ceiling", rps >= 0.7 * best,
          f"{rps:.0f} / {best:.0f} rows/s (best batch: {batch}) = {rps / best:.0%}")  # fmt: skip
    for name in ("cnn", "mlp"):
        p50, fwd = m[name]["modelhost"]["1"]["p50_ms"], m[name]["ceiling"]["single_row_forward_ms"]
        check(f"{name} c=1 p50 <= forward + 0.5 ms", p50 <= fwd + 0.5,
              f"p50 {p50:.3f} ms vs forward {fwd:.3f} ms + 0.5")  # fmt: skip
    return checks


def report(res: dict[str, Any]) -> None:
    def row(r: dict[str, Any]) -> str:
        latency = f"{r['p50_ms']:7.2f} {r['p90_ms']:7.2f} {r['p99_ms']:7.2f}"
        return f"{r['rps']:7.0f} {latency} {r['errors']:4} {r['server_cpu_us_per_request']:6.0f}"

    cols = f"{'req/s':>7} {'p50':>7} {'p90':>7} {'p99':>7} {'err':>4} {'cpu us':>6}"
    head = f"   c | {'modelhost':9} {cols} | {'baseline':9} {cols} | ratio"
    for name, m in res["models"].items():
        print(f"\n{name} (latency in ms)\n{head}")
        for c in CONCURRENCIES:
            a, b = m["modelhost"][str(c)], m["baseline"][str(c)]
            print(f"{c:4} | {'':9} {row(a)} | {'':9} {row(b)} | {a['rps'] / b['rps']:4.2f}x")
    print(f"\ncnn, OIP v2 JSON (/v2/models/cnn/infer), c=32: {row(res['oip_v2_cnn_c32'])}")
    ceilings = {n: m["ceiling"] for n, m in res["models"].items()}
    threads = ceilings["cnn"]["torch_threads"]
    print(f"\nforward-only ceiling, rows/s ({threads} torch threads): as served | the module untraced")
    print("batch |      cnn |      mlp |   cnn module |   mlp module")
    for b in BATCH_SIZES:
        served = " | ".join(f"{c['rows_per_s'][str(b)]:8.0f}" for c in ceilings.values())
        module = " | ".join(f"{c['module']['rows_per_s'][str(b)]:12.0f}" for c in ceilings.values())
        print(f"{b:5} | {served} | {module}")
    for n, c in ceilings.items():
        print(f"{n} ({c['forward']}): single-row forward {c['single_row_forward_ms']:.3f} ms "
              f"(module: {c['module']['single_row_forward_ms']:.3f} ms), medians")  # fmt: skip
    print()
    for t in res["targets"]:
        print(f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {t['detail']}")


def markdown(res: dict[str, Any]) -> str:
    """The tables of a results file as BENCHMARKS.md shows them."""

    def cells(r: dict[str, Any]) -> str:
        values = (f"{r['rps']:.0f}", *(f"{r[f'p{q}_ms']:.2f}" for q in (50, 90, 99)), str(r["errors"]))
        return " | ".join((*values, f"{r['server_cpu_us_per_request']:.0f}"))

    head = "req/s | p50 | p90 | p99 | err | CPU µs/req"
    out = []
    for name, m in res["models"].items():
        out += [f"### {name.upper()} (latency in ms; CPU: the server process's, per request)", ""]
        out += [f"| c | modelhost {head} | baseline {head} | ratio |", "|---" * 14 + "|"]
        for c in CONCURRENCIES:
            a, b = m["modelhost"][str(c)], m["baseline"][str(c)]
            out.append(f"| {c} | {cells(a)} | {cells(b)} | {a['rps'] / b['rps']:.2f}x |")
        out.append("")
    out += ["### In-process ceiling, rows/s (as served; the untraced module in brackets)", ""]
    out += [
        "| batch | " + " | ".join(str(b) for b in BATCH_SIZES) + " |",
        "|---" * (len(BATCH_SIZES) + 1) + "|",
    ]
    for name, m in res["models"].items():
        c = m["ceiling"]
        rates = (
            f"{c['rows_per_s'][str(b)]:.0f} ({c['module']['rows_per_s'][str(b)]:.0f})" for b in BATCH_SIZES
        )
        out.append(f"| {name.upper()} | " + " | ".join(rates) + " |")
    out += ["", "| target | result |", "|---|---|"]
    out += [
        f"| {t['target']} | {'PASS' if t['pass'] else '**FAIL**'} {t['detail']} |" for t in res["targets"]
    ]
    return "\n".join(out)


def machine() -> dict[str, Any]:
    cpu = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text()) or ["unknown"]
    mem_kb = int(re.findall(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[0])
    software = f"python {sys.version.split()[0]}, torch {torch.__version__}"
    return {"nproc": os.cpu_count(), "cpu": cpu[0], "ram_gib": round(mem_kb / 2**20, 1), "software": software}


def one_at_a_time() -> IO[str]:
    """Two runs on one small machine measure each other: wait until no other run holds the lock."""
    lock = (Path(tempfile.gettempdir()) / "modelhost-bench-serving.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("another bench/serving.py run is going; waiting for it to end ...", flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per load point (default 10)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 s points, a short ceiling")
    parser.add_argument(
        "--markdown", type=Path, help="print a results file's tables for BENCHMARKS.md; run nothing"
    )
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    args.duration = min(args.duration, 3) if args.quick else args.duration
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds through the finally-blocks
    with one_at_a_time(), tempfile.TemporaryDirectory(prefix="modelhost-bench-") as tmp:
        started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        res: dict[str, Any] = {"started_utc": started, "command": " ".join(sys.argv), "machine": machine()}
        res["loadavg_before"] = os.getloadavg()
        res |= bench(args, Path(tmp))
        res["loadavg_after"] = os.getloadavg()
    res["targets"] = targets(res)
    report(res)
    (results := BENCH / "results").mkdir(exist_ok=True)
    for path in (results / f"serving-{started.replace(':', '')}.json", results / "serving-latest.json"):
        path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nwrote {path.parent}/serving-{started.replace(':', '')}.json and serving-latest.json")


if __name__ == "__main__":
    main()
