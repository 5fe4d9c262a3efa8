"""Data protection: encryption keys at rest, backups and restores."""

from __future__ import annotations

import typer

encryption = typer.Typer(help="Encryption of artifacts at rest.", no_args_is_help=True)
