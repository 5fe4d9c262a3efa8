"""Users and projects: who may sign in, and which project each works in."""

from __future__ import annotations

import typer

users = typer.Typer(help="Manage users (admin).", no_args_is_help=True)
projects = typer.Typer(help="Manage projects and their members.", no_args_is_help=True)
