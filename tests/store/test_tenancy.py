"""Tenancy in the store, on SQLite and PostgreSQL: migration 0009 moves what existed into
"default" without losing a row; keys are scoped and capped by their user's membership;
services check every resource's project; projects are deleted only when empty."""

from __future__ import annotations

import datetime as dt
from importlib import resources

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from modelhost.artifacts.local import LocalArtifactStore
from modelhost.auth import projects, users
from modelhost.auth.authz import SYSTEM, Principal
from modelhost.auth.service import authenticate, create_key, list_keys, login_key, revoke_key
from modelhost.auth.tables import ApiKeyRow, MembershipRow
from modelhost.datasets.service import create_dataset, delete_dataset, get_dataset, list_datasets
from modelhost.db import Database, import_all_tables
from modelhost.errors import AlreadyExists, Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from modelhost.registry.service import delete_model, get_model, list_models, register_version
from modelhost.registry.tables import ModelVersionRow
from modelhost.serving.service import (
    DeploySpec,
    delete_deployment,
    deploy,
    get_deployment,
    list_deployments,
    resolve,
)
from modelhost.training.service import get_run, list_runs, submit_run
from modelhost.training.spec import TrainSpec
from tests.store.conftest import db, postgres_template
from tests.store.test_store import FLOWERS_CSV, manifest, weights

__all__ = ["db", "postgres_template", "weights"]  # fixtures, imported for pytest
PASSWORD = "a long enough password"


@pytest.fixture
def store(tmp_path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def _alembic(db: Database, revision: str) -> None:
    import_all_tables()
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("modelhost") / "migrations"))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


@pytest.fixture
def old_db(request, tmp_path):
    """An empty database at revision 0008 (before tenancy), SQLite or PostgreSQL."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'old.db'}")
        yield database
        database.dispose()
        return
    from tests.conftest import fresh_postgres_db

    with fresh_postgres_db(request.getfixturevalue("postgres_admin")) as url:
        database = Database(url)
        yield database
        database.dispose()


@pytest.mark.parametrize(
    "old_db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_migration_moves_everything_into_default_and_loses_no_row(old_db):
    _alembic(old_db, "0008")
    now = dt.datetime.now(dt.UTC)
    rows = [
        (
            "api_keys",
            {"name": "boot", "prefix": "mh_", "key_hash": "b" * 64, "role": "admin", "created_at": now},
        ),
        (
            "api_keys",
            {"name": "ci", "prefix": "mh_", "key_hash": "c" * 64, "role": "viewer", "created_at": now},
        ),
        ("datasets", {"name": "d", "kind": "table", "format": "csv", "artifact_key": "k", "sha256": "s"}),
        ("models", {"name": "m", "task": "classification", "description": "", "created_at": now}),
        ("model_versions", {"model_id": 1, "number": 1, "artifact_prefix": "p/", "created_at": now}),
        ("model_aliases", {"model_id": 1, "alias": "prod", "version_id": 1, "updated_at": now}),
        (
            "deployments",
            {"name": "dep", "model_id": 1, "version_id": 1, "runtime": "torch", "created_at": now},
        ),
    ]
    extra = {
        "datasets": {
            "size_bytes": 1,
            "num_rows": 1,
            "columns": [],
            "summary": {},
            "description": "",
            "created_at": now,
        },
        "model_versions": {"files": {}, "manifest": {}},
        "deployments": {"updated_at": now},
    }
    with old_db.engine.begin() as conn:  # the tables as 0008 left them, reflected
        meta = sa.MetaData()
        meta.reflect(conn)
        for table, values in rows:
            conn.execute(meta.tables[table].insert().values(**values, **extra.get(table, {})))

    old_db.migrate()

    with old_db.engine.connect() as conn:
        default = conn.scalar(sa.text("SELECT id FROM projects WHERE name = 'default'"))
        for table in ("datasets", "models", "deployments"):
            assert conn.execute(sa.text(f"SELECT project_id FROM {table}")).scalars().all() == [default]
        keys = {n: p for n, p in conn.execute(sa.text("SELECT name, project_id FROM api_keys"))}
        assert keys == {"boot": None, "ci": default}  # admins keep every project
        counts = [
            conn.scalar(sa.text(f"SELECT count(*) FROM {t}")) for t in ("model_versions", "model_aliases")
        ]
        assert counts == [1, 1]  # nothing cascaded away while columns were added


def _user(db: Database, name: str, admin: bool = False) -> int:
    with db.session() as s:
        return users.create_user(s, SYSTEM, name, PASSWORD, admin).id


def _project(db: Database, name: str) -> int:
    with db.session() as s:
        return projects.create_project(s, SYSTEM, name).id


def _as(db: Database, key: str) -> Principal:
    with db.session() as s:
        return authenticate(s, key)


def test_a_users_key_is_capped_by_their_current_membership(db):
    carol, team = _user(db, "carol"), _project(db, "team")
    with db.session() as s:
        projects.set_member(s, SYSTEM, "team", "carol", "admin")
        user = users.check_credentials(s, "carol", PASSWORD)
        key = login_key(s, user, None).key
    p = _as(db, key)
    assert (p.user_id, p.project_id, p.role, p.is_admin) == (carol, team, "admin", False)
    with db.session() as s:
        projects.set_member(s, SYSTEM, "team", "carol", "viewer")
    assert _as(db, key).role == "viewer"
    with db.session() as s:
        projects.remove_member(s, SYSTEM, "team", "carol")
    with pytest.raises(Unauthenticated):
        _as(db, key)


def test_a_disabled_users_keys_fail(db):
    _user(db, "dave", admin=True)
    with db.session() as s:
        key = login_key(s, users.check_credentials(s, "dave", PASSWORD), None).key
    assert _as(db, key).is_admin
    with db.session() as s:
        users.disable_user(s, SYSTEM, "dave")
    with pytest.raises(Unauthenticated):
        _as(db, key)
    with pytest.raises(Unauthenticated, match="wrong user name or password"), db.session() as s:
        users.check_credentials(s, "dave", PASSWORD)


def test_keys_are_granted_no_more_than_the_creator_holds(db):
    team = _project(db, "team")
    member = Principal(key_id=1, name="m", role="member", project_id=team)
    admin = Principal(key_id=2, name="a", role="admin", project_id=team)
    with db.session() as s:
        with pytest.raises(Forbidden, match="needs the admin role"):
            create_key(s, "k", "viewer", access=member)
        with pytest.raises(Forbidden, match="every project"):
            create_key(s, "k", "admin", access=admin, project="*")
        with pytest.raises(NotFound, match="project 'default' not found"):
            create_key(s, "k", "viewer", access=admin, project="default")
        created = create_key(s, "k", "member", access=admin)
        assert (created.project, created.role) == ("team", "member")
        with pytest.raises(InvalidInput, match="its role is admin"):
            create_key(s, "everything", "member", project="*")
    with db.session() as s:
        assert [k.name for k in list_keys(s, admin)] == ["k"]
        with pytest.raises(NotFound):
            revoke_key(s, created.id, Principal(key_id=3, name="b", role="admin", project_id=team + 99))


def test_services_check_the_project_of_every_resource(db, store, weights):
    alpha, _beta = _project(db, "alpha"), _project(db, "beta")
    a = Principal(key_id=1, name="a", role="member", project_id=alpha)
    with db.session() as s:
        create_dataset(s, store, "beta-data", FLOWERS_CSV, "f.csv", target="label", project="beta")
        create_dataset(s, store, "alpha-data", FLOWERS_CSV, "f.csv", target="label", access=a)
        run = submit_run(s, TrainSpec(dataset="beta-data", register_as="beta-model"))
        version = register_version(
            s, store, "beta-model", manifest(), {"weights.safetensors": weights}, run.id
        )
        spec = DeploySpec(model="beta-model")
        deploy(s, "beta-dep", spec, resolve(s, "beta-dep", spec))
    with db.session() as s:
        assert [d.name for d in list_datasets(s, access=a)] == ["alpha-data"]
        assert list_models(s, access=a) == list_runs(s, access=a) == list_deployments(s, access=a) == []
        assert get_model(s, "beta-model").project == "beta"  # the model went where its run was
        for call in (
            lambda: get_dataset(s, "beta-data", access=a),
            lambda: get_run(s, run.id, access=a),
            lambda: get_model(s, "beta-model", access=a),
            lambda: get_deployment(s, "beta-dep", access=a),
            lambda: submit_run(s, TrainSpec(dataset="beta-data"), access=a),
            lambda: resolve(s, "mine", spec, access=a),
            lambda: delete_dataset(s, store, "beta-data", access=a),
            lambda: delete_model(s, store, "beta-model", access=a),
        ):
            with pytest.raises(NotFound, match="not found"):
                call()
        with pytest.raises(AlreadyExists, match="another project"):
            submit_run(s, TrainSpec(dataset="alpha-data", register_as="beta-model"), access=a)
        with pytest.raises(Forbidden, match="needs the admin role"):
            delete_dataset(s, store, "alpha-data", access=a)
    assert version.number == 1


def test_deleting_a_deployment_takes_its_keys_and_a_project_goes_only_when_empty(db, store, weights):
    _project(db, "team")
    with db.session() as s:
        register_version(s, store, "m", manifest(), {"weights.safetensors": weights}, project="team")
        spec = DeploySpec(model="m")
        deploy(s, "dep", spec, resolve(s, "dep", spec))
        key = create_key(s, "infer", deployment="dep")
        assert (key.project, key.deployment) == ("team", "dep")
    p = _as(db, key.key)
    assert p.deployment_id is not None and p.role_in(p.project_id or 0) is None
    with db.session() as s, pytest.raises(Conflict, match="still holds 1 of its models"):
        projects.delete_project(s, SYSTEM, "team")
    with db.session() as s:
        delete_deployment(s, "dep")
    with db.session() as s:
        assert s.get(ApiKeyRow, key.id) is None
        delete_model(s, store, "m")
    with db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(ModelVersionRow)) == 0
        projects.delete_project(s, SYSTEM, "team")
        assert s.scalar(sa.select(sa.func.count()).select_from(MembershipRow)) == 0
    assert store.list("models/") == []


def test_a_deleted_versions_warm_runtime_is_not_served_under_its_reused_id(db, store, weights):
    from modelhost.serving.manager import DeploymentManager

    manager = DeploymentManager(db, store)
    with db.session() as s:
        old = register_version(s, store, "old", manifest(), {"weights.safetensors": weights})
    stale = manager.build(old, "torch")
    with db.session() as s:
        delete_model(s, store, "old")
    other = bytearray(weights)
    other[-4:] = b"\x00\x00\x80\x3f"  # a different last weight: another model
    with db.session() as s:
        new = register_version(s, store, "new", manifest(), {"weights.safetensors": bytes(other)})
    if db.url.startswith("sqlite"):
        assert new.id == old.id  # SQLite hands the highest rowid out again
    assert manager.build(new, "torch") is not stale
