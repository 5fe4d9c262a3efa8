"""Per-resource authorisation: who is calling (:class:`Principal`) and what they may do in a
project. Pure: no database, no HTTP. Services call :func:`require` with the project of the
resource they are about to read or change, and filter lists with :func:`visible_projects`.

Roles rank viewer < member < admin. viewer: read and infer; member: also upload, train,
register, deploy, cancel; admin: also delete, manage members and keys. A platform admin
(a key spanning every project) is admin everywhere. A deployment-scoped key may only infer
on its one deployment. A resource the caller may not read answers as if it did not exist
(NotFound, never Forbidden), so names and ids cannot be probed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import QueryableAttribute

from modelhost.errors import Forbidden, NotFound

Role = Literal["admin", "member", "viewer"]
Action = Literal["read", "infer", "write", "delete", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "member", "admin")
RANK: dict[str, int] = {r: i for i, r in enumerate(ROLES)}
NEEDS: dict[Action, Role] = {
    "read": "viewer",
    "infer": "viewer",
    "write": "member",
    "delete": "admin",
    "admin": "admin",
}
_Q = TypeVar("_Q", bound=sa.Select)  # type: ignore[type-arg]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key that authenticated the request and what it may reach.

    ``project_id`` None means every project, which only platform admins' keys have
    (``is_admin``). ``role`` is the key's role there, already capped by its user's current
    membership. The limits are read by the rate limiter (auth/limits.py).
    """

    key_id: int
    name: str
    role: Role
    user_id: int | None = None
    is_admin: bool = False
    project_id: int | None = None
    deployment_id: int | None = None
    rate_limit_rps: float | None = None
    tokens_per_min: int | None = None
    tokens_total: int | None = None

    def role_in(self, project_id: int) -> Role | None:
        """The caller's role in ``project_id``; None where it has none (or is inference-only)."""
        if self.deployment_id is not None:
            return None
        if self.is_admin:
            return "admin"
        return self.role if self.project_id == project_id else None


SYSTEM = Principal(key_id=0, name="system", role="admin", is_admin=True)
"""In-process callers that act for the platform itself (workers, ``modelhost up``, tests)."""


def at_least(role: str | None, needed: Role) -> bool:
    return role is not None and RANK[role] >= RANK[needed]


def lower(a: Role, b: Role) -> Role:
    return a if RANK[a] <= RANK[b] else b


def can(p: Principal, project_id: int, action: Action) -> bool:
    return at_least(p.role_in(project_id), NEEDS[action])


def require(p: Principal, project_id: int, action: Action, what: str) -> None:
    """Return if ``p`` may do ``action`` on ``what`` (e.g. ``"dataset 'iris'"``) in
    ``project_id``. NotFound if it may not even see it; Forbidden if it sees but may not act."""
    role = p.role_in(project_id)
    if role is None:
        raise NotFound(f"{what} not found")
    needed = NEEDS[action]
    if not at_least(role, needed):
        raise Forbidden(f"{action} on {what} needs the {needed} role; the key {p.name!r} is {role}")


def may_infer(p: Principal, project_id: int, deployment_id: int) -> bool:
    """The inference check: cheap (no I/O), called on every request of the data plane."""
    if p.deployment_id is not None:
        return p.deployment_id == deployment_id
    return p.is_admin or p.project_id == project_id


def visible_projects(p: Principal) -> frozenset[int] | None:
    """The projects whose resources ``p`` may list; None for all of them."""
    if p.deployment_id is not None:
        return frozenset()
    if p.is_admin:
        return None
    return frozenset() if p.project_id is None else frozenset({p.project_id})


def only_visible(q: _Q, column: QueryableAttribute[int], p: Principal) -> _Q:
    """``q`` restricted to rows of projects ``p`` may see."""
    visible = visible_projects(p)
    return q if visible is None else q.where(column.in_(visible))
