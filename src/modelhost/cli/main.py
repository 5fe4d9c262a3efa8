"""The ``modelhost`` command: ``up`` starts the platform; the rest talk to it over HTTP."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from modelhost.cli import audit, commands, protection, tenancy
from modelhost.cli.output import console, report_error
from modelhost.client import Client
from modelhost.config import load_settings
from modelhost.errors import PlatformError
from modelhost.filemodes import restrict_umask

app = typer.Typer(
    help="modelhost: train, register, deploy and serve models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(commands.datasets, name="datasets")
app.add_typer(commands.runs, name="runs")
app.add_typer(commands.sweeps, name="sweeps")
app.add_typer(commands.models, name="models")
app.add_typer(commands.deployments, name="deployments")
app.add_typer(commands.keys, name="keys")
app.add_typer(tenancy.users, name="users")
app.add_typer(tenancy.projects, name="projects")
app.add_typer(audit.audit, name="audit")
app.add_typer(protection.encryption, name="encryption")
app.command()(commands.train)
app.command("import")(commands.import_model)
app.command()(commands.deploy)
app.command()(commands.predict)
app.command()(commands.worker)
app.command()(commands.chat)
app.command()(protection.backup)
app.command()(protection.restore)


@app.command()
def up(
    host: Annotated[str | None, typer.Option(help="Bind address [default 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default 8000].")] = None,
    demo: Annotated[bool, typer.Option(help="On first start, train and deploy the digits demo.")] = False,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="PEM private key: serve HTTPS directly.")] = None,
    ssl_certfile: Annotated[Path | None, typer.Option(help="PEM certificate (chain) of that key.")] = None,
) -> None:
    """Start modelhost (API, workers, serving) on the embedded default: SQLite + local files."""
    from modelhost.cli.up import serve, tls_files

    serve(load_settings(host=host, port=port), demo=demo, tls=tls_files(ssl_keyfile, ssl_certfile))


@app.command()
def login(
    url: Annotated[str, typer.Option(help="Server URL.")],
    user: Annotated[
        str | None, typer.Option(help="Sign in as this user (password prompted) instead of giving a key.")
    ] = None,
    project: Annotated[str | None, typer.Option(help="With --user: the project the key works in.")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key [prompted when neither is given].")] = None,
) -> None:
    """Save the server and a key to the profile (mode 0600): a key you give (checked against the
    server), or with ``--user`` a 12-hour key the server issues when the password is right."""
    if user is not None:
        password = typer.prompt("Password", hide_input=True)
        with Client(url, "") as client:
            api_key = client.login(user, password, project)["key"]
    elif api_key is None:
        api_key = typer.prompt("API key", hide_input=True)
    with Client(url, api_key) as client:
        client.list_models()
    settings = load_settings()
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(settings.profile_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "api_key": api_key}, f)
    console.print(f"logged in to {url}; profile saved to {settings.profile_path}")


def main() -> None:
    """Console entry point: a PlatformError becomes one line on stderr and exit status 1."""
    restrict_umask()  # the home, database, artifacts and logs it creates are private (0600/0700)
    try:
        app()
    except PlatformError as e:
        report_error(e)
        sys.exit(1)
