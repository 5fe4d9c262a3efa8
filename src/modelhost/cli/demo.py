"""The first-start demo: train scikit-learn's digits classifier, register it, deploy it as
``digits``. Runs through the same services (and the same worker subprocess) as any run."""

from __future__ import annotations

from fastapi import FastAPI

from modelhost.cli.follow import follow_run
from modelhost.cli.output import console
from modelhost.datasets.service import create_sample_dataset, get_dataset
from modelhost.errors import NotFound
from modelhost.serving.service import DeploySpec, get_deployment
from modelhost.training import service as runs
from modelhost.training.spec import parse_spec

DEMO_SPEC = {
    "name": "digits-demo",
    "dataset": "digits",
    "task": "classification",
    "model": {"architecture": "mlp", "hidden_sizes": [128, 64]},
    "optimizer": {"name": "adam", "lr": 0.002},
    "epochs": 25,
    "batch_size": 64,
    "register_as": "digits",
}
# The first 8x8 image of scikit-learn's digits (a zero), as the curl line's example.
DEMO_INSTANCE = [
    0,
    0,
    5,
    13,
    9,
    1,
    0,
    0,
    0,
    0,
    13,
    15,
    10,
    15,
    5,
    0,
    0,
    3,
    15,
    2,
    0,
    11,
    8,
    0,
    0,
    4,
    12,
    0,
    0,
    8,
    8,
    0,
    0,
    5,
    8,
    0,
    0,
    9,
    8,
    0,
    0,
    4,
    11,
    0,
    1,
    12,
    7,
    0,
    0,
    2,
    14,
    5,
    10,
    12,
    0,
    0,
    0,
    0,
    6,
    13,
    10,
    0,
    0,
    0,
]


def run_demo(app: FastAPI) -> None:
    """Idempotent: does nothing once the ``digits`` deployment exists."""
    db, store, manager = app.state.db, app.state.store, app.state.manager
    with db.session() as s:
        try:
            get_deployment(s, "digits")
            return
        except NotFound:
            pass
        try:
            get_dataset(s, "digits")
        except NotFound:
            create_sample_dataset(s, store, "digits")
    run = app.state.executor.submit(parse_spec(DEMO_SPEC))
    console.print("training the demo digits classifier (scikit-learn's 8x8 digits) ...")

    def current() -> dict[str, object]:
        with db.session() as s:
            return runs.get_run(s, run.id).model_dump()

    final = follow_run(current)
    if final["status"] != "succeeded":
        console.print(f"[red]demo training {final['status']}[/red]: {final.get('error')}")
        return
    entry, _ = manager.deploy("digits", DeploySpec(model="digits"))
    dep = entry.deployment
    console.print(f"deployed 'digits' (model digits v{dep.version})")
