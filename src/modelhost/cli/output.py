"""How the CLI shows things: tables for lists, JSON for single records, errors on stderr."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from modelhost.errors import PlatformError

console = Console()
err_console = Console(stderr=True)
P = ParamSpec("P")
R = TypeVar("R")


def show_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


def show_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(table)


@contextmanager
def errors_as_exit() -> Iterator[None]:
    try:
        yield
    except PlatformError as e:
        err_console.print(f"[red]error[/red] ({e.code}): {e.message}")
        raise typer.Exit(1) from None


def handles_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a PlatformError into a one-line message and exit status 1, never a traceback."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with errors_as_exit():
            return fn(*args, **kwargs)

    return wrapper
