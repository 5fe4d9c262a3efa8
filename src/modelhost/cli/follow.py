"""Follow a training run with a progress bar until it ends. Ctrl-C stops following, not the run."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from modelhost.cli.output import console

FINISHED = ("succeeded", "failed", "cancelled")


def follow_run(get_run: Callable[[], dict[str, Any]], poll: float = 0.3) -> dict[str, Any]:
    """Poll ``get_run`` and draw progress; returns the final run record."""
    run = get_run()
    columns = (
        TextColumn("[bold]run {task.fields[id]}[/bold] {task.fields[status]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("train", total=None, id=run["id"], status=run["status"])
            while True:
                progress.update(
                    task, total=run["total_steps"] or None, completed=run["step"], status=run["status"]
                )
                if run["status"] in FINISHED:
                    return run
                time.sleep(poll)
                run = get_run()
    except KeyboardInterrupt:
        console.print(f"\nstopped following; run {run['id']} keeps going (modelhost runs show {run['id']})")
        raise
