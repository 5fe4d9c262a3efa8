"""Passwords (scrypt, self-describing, constant-time), the login throttle, and the pure
authorisation rules."""

from __future__ import annotations

import pytest

from modelhost.auth.authz import Principal, can, may_infer, require, visible_projects
from modelhost.auth.passwords import hash_password, verify_password
from modelhost.auth.throttle import LoginThrottle
from modelhost.errors import Forbidden, InvalidInput, NotFound, RateLimited

PASSWORD = "a long enough password"


def test_a_hash_names_its_costs_and_a_fresh_salt():
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    scheme, n, r, p, salt, digest = first.split("$")
    assert (scheme, n, r, p, len(salt), len(digest)) == ("scrypt", "16384", "8", "1", 32, 64)
    assert first != second  # salted
    assert PASSWORD not in first


def test_verify_takes_the_password_and_nothing_else():
    stored = hash_password(PASSWORD)
    assert verify_password(PASSWORD, stored)
    assert not verify_password(PASSWORD + "!", stored)
    assert not verify_password("", stored)
    for broken in ("", "scrypt$1$2", "bcrypt$16384$8$1$00$00", stored.replace("$8$", "$x$")):
        assert not verify_password(PASSWORD, broken)


@pytest.mark.parametrize("password", ["", "elevenchars", "x" * 1025])
def test_passwords_outside_the_length_bounds_are_refused(password):
    with pytest.raises(InvalidInput, match="password: use at") as e:
        hash_password(password)
    assert password not in e.value.message or not password


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_five_failures_lock_the_name_for_a_doubling_delay():
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(4):
        throttle.failed("ann", "10.0.0.1")
        throttle.check("ann", "10.0.0.1")
    throttle.failed("ann", "10.0.0.1")
    with pytest.raises(RateLimited) as e:
        throttle.check("ann", "10.0.0.2")  # the name is locked, wherever from
    assert e.value.retry_after == 30
    throttle.check("bob", "10.0.0.1")  # the address is not (yet)
    clock.now += 30
    throttle.check("ann", "10.0.0.1")
    throttle.failed("ann", "10.0.0.1")
    with pytest.raises(RateLimited) as e:
        throttle.check("ann", "10.0.0.1")
    assert e.value.retry_after == 60
    clock.now += 60
    throttle.succeeded("ann")
    throttle.failed("ann", "10.0.0.1")
    throttle.check("ann", "10.0.0.3")  # a success starts the count afresh


def test_many_failures_from_one_address_lock_the_address():
    throttle = LoginThrottle(clock=Clock())
    for i in range(20):
        throttle.failed(f"user{i}", "10.0.0.9")
    with pytest.raises(RateLimited, match="client"):
        throttle.check("someone-else", "10.0.0.9")
    throttle.check("someone-else", "10.0.0.8")


def test_failures_are_forgotten_after_a_quiet_while():
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(4):
        throttle.failed("ann", "a")
    clock.now += 901
    throttle.failed("ann", "a")
    throttle.check("ann", "a")


ALPHA, BETA = 1, 2
VIEWER = Principal(key_id=1, name="v", role="viewer", project_id=ALPHA)
MEMBER = Principal(key_id=2, name="m", role="member", project_id=ALPHA)
ADMIN = Principal(key_id=3, name="a", role="admin", project_id=ALPHA)
PLATFORM = Principal(key_id=4, name="p", role="admin", is_admin=True)
INFER = Principal(key_id=5, name="i", role="viewer", project_id=ALPHA, deployment_id=7)


@pytest.mark.parametrize(
    ("who", "allowed"),
    [
        (VIEWER, {"read", "infer"}),
        (MEMBER, {"read", "infer", "write"}),
        (ADMIN, {"read", "infer", "write", "delete", "admin"}),
        (PLATFORM, {"read", "infer", "write", "delete", "admin"}),
        (INFER, set()),
    ],
)
def test_roles_rank_viewer_member_admin_within_their_project(who, allowed):
    actions = ("read", "infer", "write", "delete", "admin")
    assert {a for a in actions if can(who, ALPHA, a)} == allowed
    assert {a for a in actions if can(who, BETA, a)} == (allowed if who is PLATFORM else set())


def test_another_projects_resource_is_not_found_and_a_too_low_role_is_forbidden():
    with pytest.raises(NotFound, match=r"^dataset 'x' not found$"):
        require(ADMIN, BETA, "read", "dataset 'x'")
    with pytest.raises(Forbidden, match="delete on dataset 'x' needs the admin role; the key 'm' is member"):
        require(MEMBER, ALPHA, "delete", "dataset 'x'")


def test_inference_and_listing_scopes():
    assert may_infer(VIEWER, ALPHA, 9) and not may_infer(VIEWER, BETA, 9)
    assert may_infer(INFER, ALPHA, 7) and not may_infer(INFER, ALPHA, 8)
    assert may_infer(PLATFORM, BETA, 9)
    assert visible_projects(MEMBER) == {ALPHA}
    assert visible_projects(INFER) == frozenset()
    assert visible_projects(PLATFORM) is None
