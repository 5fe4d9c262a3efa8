"""Resource commands: datasets, train, runs, models, import, deploy, deployments, predict, keys.
Each is a thin call to the Python client, which speaks the public HTTP API; ``worker`` is a
role like ``up``: it talks to the database and the artifact store."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from modelhost.cli.follow import follow_run
from modelhost.cli.output import console, show_json, show_table
from modelhost.client import Client
from modelhost.errors import InvalidInput

Url = Annotated[str | None, typer.Option("--url", help="Server URL [env MODELHOST_URL, else login profile].")]
Project = Annotated[
    str | None,
    typer.Option("--project", help="Project to create it in [default: its parent's, else the key's]."),
]
Key = Annotated[
    str | None, typer.Option("--api-key", help="API key [env MODELHOST_API_KEY, else login profile].")
]

datasets = typer.Typer(help="Upload and inspect datasets.", no_args_is_help=True)
runs = typer.Typer(help="Inspect, follow, cancel, resume and compare training runs.", no_args_is_help=True)
sweeps = typer.Typer(help="Hyper-parameter sweeps: their trials and the best one.", no_args_is_help=True)
models = typer.Typer(help="Browse the model registry.", no_args_is_help=True)
deployments = typer.Typer(help="List and remove deployments.", no_args_is_help=True)
keys = typer.Typer(help="Manage API keys (admin).", no_args_is_help=True)


def _client(url: str | None, api_key: str | None) -> Client:
    return Client(url, api_key)


# --- datasets


@datasets.command("upload")
def datasets_upload(
    path: Path,
    name: Annotated[str, typer.Option(help="Dataset name.")],
    target: Annotated[str | None, typer.Option(help="Default target column (or npz array).")] = None,
    format: Annotated[
        str | None, typer.Option(help="csv, jsonl, npy, npz, text, zip or tar; default from the suffix.")
    ] = None,
    description: Annotated[str, typer.Option(help="What the data is.")] = "",
    project: Project = None,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Upload a dataset: CSV (header row), JSONL, NPY, NPZ, UTF-8 text, or a zip/tar of image
    folders (one folder of PNG/JPEG files per class)."""
    if not path.is_file():
        raise InvalidInput(f"{str(path)!r} is not a file")
    show_json(_client(url, api_key).upload_dataset(path, name, target, format, description, project=project))


@datasets.command("sample")
def datasets_sample(
    sample: str,
    name: Annotated[str | None, typer.Option()] = None,
    project: Project = None,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Create a dataset from a bundled sample: digits, iris, wine, breast_cancer (tables),
    digits_images (8x8 PNGs, a folder per digit) or classics (English text)."""
    show_json(_client(url, api_key).sample_dataset(sample, name, project))


@datasets.command("list")
def datasets_list(url: Url = None, api_key: Key = None) -> None:
    show_table(
        _client(url, api_key).list_datasets(),
        ["id", "name", "kind", "format", "num_rows", "target", "sha256", "created_at"],
    )


@datasets.command("show")
def datasets_show(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole record as JSON.")] = False,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Show a dataset and the summary its kind has: columns, arrays, classes or text size."""
    ds = _client(url, api_key).get_dataset(name)
    if as_json:
        show_json(ds)
        return
    console.print(
        f"dataset {ds['name']!r} (id {ds['id']}): {ds['kind']} from {ds['format']}, "
        f"{ds['num_rows']} examples, {ds['size_bytes']} bytes, target {ds['target'] or '-'}",
        highlight=False,
    )
    console.print(f"sha256 {ds['sha256']}", highlight=False)
    summary = ds["summary"]
    if summary["kind"] == "table":
        show_table(summary["columns"], ["name", "type"], title="columns")
    elif summary["kind"] == "arrays":
        show_table(summary["arrays"], ["name", "shape", "dtype"], title="arrays")
    elif summary["kind"] == "images":
        show_table(summary["classes"], ["name", "count"], title="classes")
        low, high = ("x".join(map(str, summary[k])) for k in ("min_size", "max_size"))
        console.print(f"sizes {low} to {high}, channels {summary['channels']}", highlight=False)
    else:
        console.print(
            f"{summary['num_chars']} characters, {summary['num_lines']} lines, "
            f"{summary['vocab_size']} distinct characters",
            highlight=False,
        )


@datasets.command("delete")
def datasets_delete(name: str, url: Url = None, api_key: Key = None) -> None:
    _client(url, api_key).delete_dataset(name)
    console.print(f"deleted dataset {name!r}")


# --- training


def load_spec_file(path: Path) -> dict[str, object]:
    if not path.is_file():
        raise InvalidInput(f"spec file {str(path)!r} not found")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise InvalidInput(f"{str(path)!r} is not valid YAML or JSON: {e}") from e
    if not isinstance(spec, dict):
        raise InvalidInput(f"{str(path)!r} must hold a mapping (dataset:, model:, ...)")
    return spec


def train(
    spec: Path,
    follow: Annotated[bool, typer.Option(help="Follow with a progress bar.")] = True,
    project: Project = None,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Submit a training run from a YAML or JSON spec and follow it. Ctrl-C leaves it running.
    A spec with a ``sweep:`` section queues one run per trial and follows the sweep."""
    client = _client(url, api_key)
    document = load_spec_file(spec)
    if "sweep" in document:
        submitted = client.sweep(document, project)
        console.print(f"sweep {submitted['sweep']['id']}: {len(submitted['runs'])} runs queued")
        if follow:
            _follow_sweep(client, submitted["sweep"]["id"])
        return
    run = client.train(document, project)
    console.print(f"run {run['id']} queued")
    if follow:
        _follow(client, run["id"])


def _follow(client: Client, run_id: int) -> None:
    try:
        run = follow_run(lambda: client.get_run(run_id))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    _report(client, run)


def _follow_sweep(client: Client, sweep_id: int, poll: float = 1.0) -> None:
    try:
        sweep = client.get_sweep(sweep_id)
        while any(t["status"] in ("queued", "running") for t in sweep["trials"]):
            time.sleep(poll)
            sweep = client.get_sweep(sweep_id)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    _show_sweep(sweep)


def _show_sweep(sweep: dict[str, Any]) -> None:
    rows = [{**t, **{f"{k}": v for k, v in t["params"].items()}} for t in sweep["trials"]]
    params = list(sweep["trials"][0]["params"]) if sweep["trials"] else []
    show_table(
        rows, ["run_id", "status", *params, "value"], title=f"sweep {sweep['id']} by {sweep['metric']}"
    )
    best = sweep["best_run_id"]
    console.print(f"best: run {best}" if best is not None else "no finished trial yet")


def _report(client: Client, run: dict[str, object]) -> None:
    if run["status"] == "succeeded":
        console.print(f"[green]run {run['id']} succeeded[/green]: registered {run['model_name']!r}")
        return
    console.print(f"[red]run {run['id']} {run['status']}[/red]: {run.get('error') or ''}")
    raise typer.Exit(1)


@runs.command("list")
def runs_list(status: str | None = None, url: Url = None, api_key: Key = None) -> None:
    show_table(
        _client(url, api_key).list_runs(status),
        ["id", "name", "status", "attempt", "model_name", "step", "total_steps", "created_at", "error"],
    )


@runs.command("show")
def runs_show(run_id: int, url: Url = None, api_key: Key = None) -> None:
    show_json(_client(url, api_key).get_run(run_id))


@runs.command("metrics")
def runs_metrics(
    run_id: int,
    key: str | None = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the run ends.")] = False,
    url: Url = None,
    api_key: Key = None,
) -> None:
    client = _client(url, api_key)
    if not follow:
        show_table(client.run_metrics(run_id, key), ["key", "step", "epoch", "value"])
        return
    shown = 0
    for _ in _until_finished(client, run_id):
        rows = client.run_metrics(run_id, key)
        for m in rows[shown:]:
            epoch = "" if m["epoch"] is None else f" epoch {m['epoch']}"
            console.print(f"step {m['step']}{epoch} {m['key']}={m['value']:.6g}", highlight=False)
        shown = len(rows)


@runs.command("logs")
def runs_logs(
    run_id: int,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the run ends.")] = False,
    url: Url = None,
    api_key: Key = None,
) -> None:
    client, after = _client(url, api_key), 0
    for _ in _until_finished(client, run_id) if follow else iter([None]):
        for line in client.run_logs(run_id, after):
            console.print(f"{line['created_at']} {line['line']}", highlight=False)
            after = line["id"]


def _until_finished(client: Client, run_id: int, poll: float = 0.5) -> Iterator[None]:
    """Yield once per poll while the run goes, and once more after it ended (the last lines)."""
    try:
        while client.get_run(run_id)["status"] in ("queued", "running"):
            yield
            time.sleep(poll)
        yield
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@runs.command("resume")
def runs_resume(
    run_id: int,
    follow: Annotated[bool, typer.Option(help="Follow with a progress bar.")] = True,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Continue a cancelled or failed run from its last checkpoint."""
    client = _client(url, api_key)
    client.resume_run(run_id)
    console.print(f"run {run_id} queued again; it continues from its last checkpoint")
    if follow:
        _follow(client, run_id)


@runs.command("compare")
def runs_compare(run_ids: list[int], url: Url = None, api_key: Key = None) -> None:
    """Runs side by side: the settings that differ and the final metrics."""
    c = _client(url, api_key).compare_runs(run_ids)
    rows = [
        {"id": r["id"], "name": r["name"], "status": r["status"], **r["params"], **r["metrics"]}
        for r in c["runs"]
    ]
    columns = ["id", "name", "status", *c["params"], *c["metrics"]]
    table = Table(*["", *(str(r["id"]) for r in rows)], title="runs compared")
    for col in columns[1:]:
        table.add_row(col, *(_cell(r.get(col)) for r in rows))
    console.print(table)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


@sweeps.command("list")
def sweeps_list(url: Url = None, api_key: Key = None) -> None:
    rows = [
        {**s, "trials": len(s["trials"]), "done": sum(t["status"] == "succeeded" for t in s["trials"])}
        for s in _client(url, api_key).list_sweeps()
    ]
    show_table(rows, ["id", "name", "metric", "trials", "done", "best_run_id", "created_at"])


@sweeps.command("show")
def sweeps_show(sweep_id: int, url: Url = None, api_key: Key = None) -> None:
    _show_sweep(_client(url, api_key).get_sweep(sweep_id))


@runs.command("cancel")
def runs_cancel(run_id: int, url: Url = None, api_key: Key = None) -> None:
    run = _client(url, api_key).cancel_run(run_id)
    console.print(
        f"run {run_id}: {run['status']}" + (" (cancel requested)" if run["status"] == "running" else "")
    )


def worker(
    once: Annotated[bool, typer.Option(help="Take at most one queued run, then exit.")] = False,
    poll: Annotated[float | None, typer.Option(help="Seconds between looks at an empty queue [2].")] = None,
    lease: Annotated[
        float | None, typer.Option(help="Seconds a claim holds without a heartbeat [30].")
    ] = None,
    heartbeat: Annotated[float | None, typer.Option(help="Seconds between heartbeats [5].")] = None,
    max_attempts: Annotated[int | None, typer.Option(help="Attempts before a lost run fails [3].")] = None,
) -> None:
    """Run queued training runs, one at a time, until stopped (SIGTERM or Ctrl-C hands the
    current run back to the queue). Any host that shares the server's database and artifact
    store (MODELHOST_DATABASE_URL, MODELHOST_ARTIFACTS_URL) can run workers; the server
    migrates the database, so start it first."""
    import logging
    import threading

    from modelhost.training.queue import QueueOptions
    from modelhost.training.worker import open_stores, stop_on_signals, work

    options = QueueOptions.parse(poll_s=poll, lease_s=lease, heartbeat_s=heartbeat, max_attempts=max_attempts)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    shutdown = threading.Event()
    stop_on_signals(shutdown)
    db, store = open_stores()
    try:
        taken = work(db, store, options, once=once, shutdown=shutdown)
    finally:
        db.dispose()
    console.print(f"worker stopped after {taken} run(s)")


# --- registry


@models.command("list")
def models_list(url: Url = None, api_key: Key = None) -> None:
    show_table(_client(url, api_key).list_models(), ["id", "name", "task", "latest_version", "created_at"])


@models.command("show")
def models_show(name: str, url: Url = None, api_key: Key = None) -> None:
    client = _client(url, api_key)
    show_json({**client.get_model(name), "versions": client.list_versions(name)})


def import_model(
    path: Path,
    name: Annotated[str, typer.Option(help="Model to add the version to (created if new).")],
    project: Project = None,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Import PATH as the next version of model NAME: an .onnx file (served by runtime onnx), a .gguf
    file, or a Hugging Face model folder (config.json, *.safetensors, tokenizer.json, ...)."""
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InvalidInput(
                f"{str(path)!r} has no config.json; modelhost imports Hugging Face folders that have one"
            )
    elif not path.is_file():
        raise InvalidInput(f"{str(path)!r} is neither a file nor a folder")
    elif path.suffix.lower() not in (".onnx", ".gguf"):
        raise InvalidInput(
            f"{str(path)!r}: modelhost imports .onnx and .gguf files and Hugging Face model folders"
        )
    show_json(_client(url, api_key).import_model(path, name, project=project))


# --- deployments and prediction


def _version_ref(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _traffic(value: str) -> list[dict[str, int | str | float]]:
    """``1=90,2=10`` -> [{"version": 1, "weight": 90}, {"version": 2, "weight": 10}]."""
    split: list[dict[str, int | str | float]] = []
    for part in value.split(","):
        ref, sep, weight = part.partition("=")
        try:
            split.append({"version": _version_ref(ref.strip()), "weight": float(weight)})
        except ValueError:
            raise InvalidInput(f"--traffic: {part!r} is not VERSION=WEIGHT (e.g. 1=90,2=10)") from None
        if not sep:
            raise InvalidInput(f"--traffic: {part!r} is not VERSION=WEIGHT (e.g. 1=90,2=10)")
    return split


def deploy(
    name: str,
    model: Annotated[str, typer.Option(help="Registered model to serve.")],
    version: Annotated[str | None, typer.Option(help="Version number or alias [default: latest].")] = None,
    traffic: Annotated[str | None, typer.Option(help="A split instead of --version: 1=90,2=10.")] = None,
    shadow: Annotated[
        str | None, typer.Option(help="Version or alias that gets a copy of every request.")
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(help="torch, onnx, llm or embedding [by the version: llm for language models]."),
    ] = None,
    precision: Annotated[str, typer.Option(help="Language models: fp32, bf16 or int8 weight-only.")] = "fp32",
    replicas: Annotated[int, typer.Option(help="Serving threads per version.")] = 1,
    max_batch_size: Annotated[int, typer.Option(help="Most rows in one forward pass.")] = 64,
    max_wait_ms: Annotated[float, typer.Option(help="How long a batch may wait for more requests.")] = 0.0,
    max_queue: Annotated[int, typer.Option(help="Most waiting requests before 503.")] = 512,
    timeout_ms: Annotated[float, typer.Option(help="Per-request deadline (504 after it).")] = 30_000,
    project: Project = None,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Deploy (or update) NAME to serve a model version, a traffic split or a shadow."""
    batching = {
        "max_batch_size": max_batch_size,
        "max_wait_ms": max_wait_ms,
        "max_queue": max_queue,
        "timeout_ms": timeout_ms,
    }
    dep = _client(url, api_key).deploy(
        name,
        model,
        _version_ref(version) if version else None,
        traffic=_traffic(traffic) if traffic else None,
        shadow=_version_ref(shadow) if shadow else None,
        runtime=runtime,
        precision=precision,
        replicas=replicas,
        batching=batching,
        project=project,
    )
    _show_deployment(dep)


def _show_deployment(dep: dict[str, Any]) -> None:
    split = ", ".join(f"v{t['version']} {t['weight']:g}" for t in dep["targets"])
    shadow = f" (shadow v{dep['shadow']['version']})" if dep.get("shadow") else ""
    console.print(f"deployment {dep['name']!r} -> {dep['model']} {split}{shadow}: {dep['state']}")
    if dep["state"] == "failed":
        console.print(f"[red]{dep['error']}[/red]")
        raise typer.Exit(1)


@deployments.command("rollback")
def deployments_rollback(name: str, url: Url = None, api_key: Key = None) -> None:
    """Back to the deployment's state before its last change."""
    _show_deployment(_client(url, api_key).rollback(name))


@models.command("alias")
def models_alias(model: str, alias: str, version: int, url: Url = None, api_key: Key = None) -> None:
    """Point ALIAS (e.g. production) at VERSION; deployments that follow it move along."""
    show_json(_client(url, api_key).set_alias(model, alias, version))


@deployments.command("list")
def deployments_list(url: Url = None, api_key: Key = None) -> None:
    show_table(
        _client(url, api_key).list_deployments(), ["name", "model", "version", "runtime", "state", "error"]
    )


@deployments.command("show")
def deployments_show(name: str, url: Url = None, api_key: Key = None) -> None:
    show_json(_client(url, api_key).get_deployment(name))


@deployments.command("delete")
def deployments_delete(name: str, url: Url = None, api_key: Key = None) -> None:
    _client(url, api_key).delete_deployment(name)
    console.print(f"deleted deployment {name!r}")


def predict(
    name: str,
    json_body: Annotated[str, typer.Option("--json", help='{"instances": [...]}')],
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Send instances to a deployment's :predict endpoint; prints the predictions."""
    try:
        body = json.loads(json_body)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"--json is not valid JSON: {e}") from e
    if not isinstance(body, dict) or "instances" not in body:
        raise InvalidInput('--json must be an object like {"instances": [[...]]}')
    show_json({"predictions": _client(url, api_key).predict(name, body["instances"])})


# --- keys


@keys.command("create")
def keys_create(
    name: str,
    role: Annotated[str, typer.Option(help="viewer, member or admin (no higher than yours).")] = "member",
    project: Annotated[
        str | None, typer.Option(help="Project [default: your key's]; '*': every project (platform admins).")
    ] = None,
    deployment: Annotated[str | None, typer.Option(help="An inference-only key for this deployment.")] = None,
    expires_at: Annotated[str | None, typer.Option(help="ISO 8601: 2030-01-01T00:00:00Z.")] = None,
    rate_limit_rps: Annotated[float | None, typer.Option(help="Requests per second.")] = None,
    tokens_per_min: Annotated[int | None, typer.Option(help="LLM tokens per minute.")] = None,
    tokens_total: Annotated[int | None, typer.Option(help="LLM tokens in all.")] = None,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Create a key; its secret is printed once and cannot be shown again."""
    scope = {"project": project, "deployment": deployment, "expires_at": expires_at}
    limits = {"rate_limit_rps": rate_limit_rps, "tokens_per_min": tokens_per_min}
    client = _client(url, api_key)
    show_json(client.create_key(name, role, **scope, **limits, tokens_total=tokens_total))


@keys.command("list")
def keys_list(url: Url = None, api_key: Key = None) -> None:
    columns = ["id", "name", "prefix", "role", "project", "deployment", "user", "expires_at", "revoked_at"]
    show_table(_client(url, api_key).list_keys(), columns)


@keys.command("revoke")
def keys_revoke(key_id: int, url: Url = None, api_key: Key = None) -> None:
    show_json(_client(url, api_key).revoke_key(key_id))


def chat(
    name: str,
    message: Annotated[
        str | None,
        typer.Option("--message", "-m", help="Ask this once and exit (else: a conversation on stdin)."),
    ] = None,
    system: Annotated[str | None, typer.Option(help="A system prompt.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Longest reply, in tokens.")] = 512,
    temperature: Annotated[float, typer.Option(help="0 for greedy.")] = 0.7,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Chat with the language model deployed as NAME, the reply streamed to the terminal."""
    client = _client(url, api_key)
    history = [{"role": "system", "content": system}] if system else []
    prompts = [message] if message is not None else _lines("you> ")
    for prompt in prompts:
        history.append({"role": "user", "content": prompt})
        reply = []
        for piece in client.chat_stream(name, history, max_tokens=max_tokens, temperature=temperature):
            console.out(piece, end="", highlight=False)
            reply.append(piece)
        console.out("")
        history.append({"role": "assistant", "content": "".join(reply)})


def _lines(prompt: str) -> Iterator[str]:
    while True:
        try:
            line = console.input(prompt)
        except (EOFError, KeyboardInterrupt):
            return
        if line.strip():
            yield line
