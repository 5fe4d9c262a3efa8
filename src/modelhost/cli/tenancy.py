"""Users and projects: who may sign in, and which project each works in.

``users create`` works without a running server (it opens the database, like ``modelhost
up``), so the first platform admin can be made before anyone can sign in; with ``--url``
or a login profile it asks the server instead. The rest talk to the server.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from modelhost.cli.commands import Key, Url, _client
from modelhost.cli.output import console, show_json, show_table

users = typer.Typer(help="Manage users (platform admins).", no_args_is_help=True)
projects = typer.Typer(help="Manage projects and their members.", no_args_is_help=True)

PASSWORD_ENV = "MODELHOST_PASSWORD"


def _password(password_stdin: bool) -> str:
    if password_stdin:
        return typer.get_text_stream("stdin").readline().rstrip("\n")
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


def create_user_locally(name: str, password: str, admin: bool) -> dict[str, object]:
    """Create a user straight in the configured database (migrated first), as the platform."""
    from modelhost.auth import users as service
    from modelhost.auth.authz import SYSTEM
    from modelhost.config import load_settings
    from modelhost.db import Database

    settings = load_settings()
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(settings.resolved_database_url)
    try:
        db.migrate()
        with db.session() as s:
            return service.create_user(s, SYSTEM, name, password, admin).model_dump(mode="json")
    finally:
        db.dispose()


@users.command("create")
def users_create(
    name: str,
    admin: Annotated[bool, typer.Option("--admin", help="A platform admin (every project, users).")] = False,
    password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin.")] = False,
    local: Annotated[
        bool, typer.Option("--local", help="Write to this home's database directly (no server needed).")
    ] = False,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Create a user (password prompted, or $MODELHOST_PASSWORD, or --password-stdin)."""
    password = _password(password_stdin)
    if local:
        show_json(create_user_locally(name, password, admin))
    else:
        show_json(_client(url, api_key).create_user(name, password, admin))


@users.command("list")
def users_list(url: Url = None, api_key: Key = None) -> None:
    show_table(
        _client(url, api_key).list_users(),
        ["id", "name", "is_admin", "projects", "created_at", "disabled_at"],
    )


@users.command("disable")
def users_disable(name: str, url: Url = None, api_key: Key = None) -> None:
    """The user can no longer sign in; their keys stop working."""
    show_json(_client(url, api_key).disable_user(name))


@projects.command("create")
def projects_create(name: str, url: Url = None, api_key: Key = None) -> None:
    """Create a project (platform admins); you become its admin."""
    show_json(_client(url, api_key).create_project(name))


@projects.command("list")
def projects_list(url: Url = None, api_key: Key = None) -> None:
    show_table(_client(url, api_key).list_projects(), ["id", "name", "role", "created_at"])


@projects.command("show")
def projects_show(name: str, url: Url = None, api_key: Key = None) -> None:
    client = _client(url, api_key)
    show_json({**client.get_project(name), "members": client.list_members(name)})


@projects.command("delete")
def projects_delete(name: str, url: Url = None, api_key: Key = None) -> None:
    """Delete an empty project (project admins)."""
    _client(url, api_key).delete_project(name)
    console.print(f"deleted project {name}")


@projects.command("add-member")
def projects_add_member(
    project: str,
    user: str,
    role: Annotated[str, typer.Option(help="viewer, member or admin.")] = "member",
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Add a user to a project, or change their role there (project admins)."""
    show_json(_client(url, api_key).set_member(project, user, role))


@projects.command("remove-member")
def projects_remove_member(project: str, user: str, url: Url = None, api_key: Key = None) -> None:
    _client(url, api_key).remove_member(project, user)
    console.print(f"removed {user} from {project}")
