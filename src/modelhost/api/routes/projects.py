"""Projects and their members; signing in (``POST /api/v1/login``, open without a key)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, SecretStr

from modelhost.api.auth import Caller
from modelhost.api.deps import DB
from modelhost.auth import projects, service, users
from modelhost.auth.authz import Role
from modelhost.auth.throttle import LoginThrottle
from modelhost.errors import Unauthenticated

router = APIRouter(prefix="/api/v1")


class CreateProject(BaseModel, extra="forbid"):
    name: str


class MemberRole(BaseModel, extra="forbid"):
    role: Role


@router.post("/projects", status_code=201, tags=["projects"])
def create_project(body: CreateProject, db: DB, caller: Caller) -> projects.Project:
    """Platform admins; the creating user becomes the project's admin."""
    with db.session() as s:
        return projects.create_project(s, caller, body.name)


@router.get("/projects", tags=["projects"])
def list_projects(db: DB, caller: Caller) -> list[projects.Project]:
    """The projects the caller can see, with its role in each."""
    with db.session() as s:
        return projects.list_projects(s, caller)


@router.get("/projects/{name}", tags=["projects"])
def show_project(name: str, db: DB, caller: Caller) -> projects.Project:
    with db.session() as s:
        return projects.get_project(s, caller, name)


@router.delete("/projects/{name}", status_code=204, tags=["projects"])
def delete_project(name: str, db: DB, caller: Caller, request: Request) -> Response:
    """Project admins; refused while the project holds datasets, runs, models or deployments.
    Its keys and memberships go with it."""
    with db.session() as s:
        projects.delete_project(s, caller, name)
    request.app.state.authenticator.forget()  # a new project may get its id: no cached key may reach it
    return Response(status_code=204)


@router.get("/projects/{name}/members", tags=["projects"])
def list_members(name: str, db: DB, caller: Caller) -> list[projects.Member]:
    with db.session() as s:
        return projects.list_members(s, caller, name)


@router.put("/projects/{name}/members/{user}", tags=["projects"])
def set_member(
    name: str, user: str, body: MemberRole, db: DB, caller: Caller, request: Request
) -> projects.Member:
    """Add a user to the project with a role, or change their role (project admins)."""
    with db.session() as s:
        member = projects.set_member(s, caller, name, user, body.role)
    request.app.state.authenticator.forget()  # their keys' roles are capped by this one
    return member


@router.delete("/projects/{name}/members/{user}", status_code=204, tags=["projects"])
def remove_member(name: str, user: str, db: DB, caller: Caller, request: Request) -> Response:
    """Remove a user from the project; their keys for it stop working at once."""
    with db.session() as s:
        projects.remove_member(s, caller, name, user)
    request.app.state.authenticator.forget()
    return Response(status_code=204)


def _throttle(request: Request) -> LoginThrottle:
    """The app's login throttle (one per app, made on first use)."""
    state = request.app.state
    if getattr(state, "login_throttle", None) is None:
        state.login_throttle = LoginThrottle()
    throttle: LoginThrottle = state.login_throttle
    return throttle


class Login(BaseModel, extra="forbid"):
    username: str
    password: SecretStr
    project: str | None = None
    """The project to work in; may be left out by platform admins (every project) and by
    users of one project."""


@router.post("/login", status_code=201, tags=["users"])
def login(body: Login, db: DB, request: Request) -> service.CreatedKey:
    """Sign in with a user name and password: a new API key of that user, valid for 12 hours.
    Failed attempts are throttled per user name and per client address (429, Retry-After)."""
    throttle = _throttle(request)
    client = request.client.host if request.client else "unknown"
    throttle.check(body.username, client)
    with db.session() as s:
        try:
            user = users.check_credentials(s, body.username, body.password.get_secret_value())
        except Unauthenticated:
            throttle.failed(body.username, client)
            raise
        throttle.succeeded(body.username)
        return service.login_key(s, user, body.project)
