"""``modelhost audit``: read the audit log (admin)."""

from __future__ import annotations

import typer

audit = typer.Typer(help="Read the audit log (admin).", no_args_is_help=True)
