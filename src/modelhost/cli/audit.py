"""``modelhost audit``: read the audit log (admin)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from modelhost.cli.commands import Key, Url
from modelhost.cli.output import show_json, show_table
from modelhost.client import Client

audit = typer.Typer(help="Read the audit log (admin).", no_args_is_help=True)

TIME_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S"]
COLUMNS = ["id", "at", "actor", "method", "path", "target", "status", "outcome", "client"]


@audit.command("list")
def audit_list(
    since: Annotated[
        dt.datetime | None,
        typer.Option(formats=TIME_FORMATS, help="From this time on (UTC unless it names a zone)."),
    ] = None,
    until: Annotated[
        dt.datetime | None,
        typer.Option(formats=TIME_FORMATS, help="Before this time (UTC unless it names a zone)."),
    ] = None,
    actor: Annotated[str | None, typer.Option(help="A key or user name, or 'name (prefix)'.")] = None,
    action: Annotated[
        str | None, typer.Option(help="A method (DELETE), a path prefix (/api/v1/datasets), or both.")
    ] = None,
    outcome: Annotated[str | None, typer.Option(help="ok, denied or failed.")] = None,
    limit: Annotated[int, typer.Option(help="Most entries to show (1-1000).")] = 100,
    cursor: Annotated[int | None, typer.Option(help="Continue from a previous page's next_cursor.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the page as JSON (with next_cursor).")] = False,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """State changes, newest first: who, what, when, from where, and how each ended."""
    with Client(url, api_key) as client:
        page = client.audit(
            since=_utc(since),
            until=_utc(until),
            actor=actor,
            action=action,
            outcome=outcome,
            limit=limit,
            cursor=cursor,
        )
    if json:
        show_json(page)
        return
    show_table(page["entries"], COLUMNS)
    if page["next_cursor"] is not None:
        typer.echo(f"more: --cursor {page['next_cursor']}")


def _utc(t: dt.datetime | None) -> dt.datetime | None:
    return t if t is None or t.tzinfo is not None else t.replace(tzinfo=dt.UTC)
