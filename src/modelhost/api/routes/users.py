"""Users (platform admins): create, list, disable. No self sign-up."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, SecretStr

from modelhost.api.auth import Caller, require_platform_admin
from modelhost.api.deps import DB
from modelhost.auth import users

router = APIRouter(prefix="/api/v1/users", tags=["users"], dependencies=[require_platform_admin()])


class CreateUser(BaseModel, extra="forbid"):
    name: str
    password: SecretStr
    admin: bool = False
    """A platform admin: creates projects and users, and is admin in every project."""


@router.post("", status_code=201)
def create_user(body: CreateUser, db: DB, caller: Caller) -> users.User:
    with db.session() as s:
        return users.create_user(s, caller, body.name, body.password.get_secret_value(), body.admin)


@router.get("")
def list_users(db: DB, caller: Caller) -> list[users.User]:
    with db.session() as s:
        return users.list_users(s, caller)


@router.post("/{name}/disable")
def disable_user(name: str, db: DB, caller: Caller, request: Request) -> users.User:
    """The user can no longer sign in, and their keys stop working at once."""
    with db.session() as s:
        user = users.disable_user(s, caller, name)
    request.app.state.authenticator.forget()
    return user
