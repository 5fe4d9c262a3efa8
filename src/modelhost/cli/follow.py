"""Follow a training run with a progress bar until it ends. Ctrl-C stops following, not the run."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from modelhost.cli.output import console

FINISHED = ("succeeded", "failed", "cancelled")


def follow_run(get_run: Callable[[], dict[str, Any]], poll: float = 0.3) -> dict[str, Any]:
    """Poll ``get_run`` and draw progress; returns the final run record. Ctrl-C (SIGINT) stops
    following: it raises KeyboardInterrupt once the progress bar is closed."""
    run = get_run()
    columns = (
        TextColumn("[bold]run {task.fields[id]}[/bold] {task.fields[status]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with _ctrl_c() as stop, Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("train", total=None, id=run["id"], status=run["status"])
        while True:
            total = run["total_steps"] or None
            progress.update(task, total=total, completed=run["step"], status=run["status"])
            if run["status"] in FINISHED:
                return run
            if stop.wait(poll):
                break
            run = get_run()
    console.print(f"\nstopped following; run {run['id']} keeps going (modelhost runs show {run['id']})")
    raise KeyboardInterrupt


@contextmanager
def _ctrl_c() -> Iterator[threading.Event]:
    """An event SIGINT sets, instead of a KeyboardInterrupt raised wherever the main thread is:
    one landing inside the progress bar's lock left its refresh thread waiting forever."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
