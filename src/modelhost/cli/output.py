"""How the CLI shows things: tables for lists, JSON for single records, errors on stderr."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from modelhost.errors import PlatformError

console = Console()
err_console = Console(stderr=True)


def show_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


def show_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(table)


def report_error(e: PlatformError) -> None:
    err_console.print(f"[red]error[/red] ({e.code}): {e.message}", highlight=False, soft_wrap=True)
