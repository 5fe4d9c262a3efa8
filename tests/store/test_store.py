"""The metadata store through its service functions, on SQLite and on PostgreSQL.

Every step runs in its own ``db.session()`` (a committed unit of work) unless the test is
about what one session sees, so the assertions read what the database really kept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import pytest
import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import ValidationError

from modelhost.artifacts.local import LocalArtifactStore
from modelhost.auth.service import (
    authenticate,
    create_key,
    ensure_admin_key,
    list_keys,
    revoke_key,
)
from modelhost.auth.tables import ApiKeyRow
from modelhost.datasets.service import (
    create_dataset,
    delete_dataset,
    get_dataset,
    list_datasets,
    load_table,
)
from modelhost.db import Database
from modelhost.errors import (
    AlreadyExists,
    ArtifactCorrupted,
    Conflict,
    InvalidInput,
    NotFound,
    StorageError,
    Unauthenticated,
    UnsafeContent,
)
from modelhost.registry.aliases import list_aliases, resolve_version, set_alias
from modelhost.registry.manifest import MANIFEST_FILE, WEIGHTS_FILE, Manifest, Signature, TensorSpec
from modelhost.registry.service import (
    get_version,
    list_models,
    list_versions,
    read_version_file,
    register_version,
)
from modelhost.serving.service import (
    DeploySpec,
    delete_deployment,
    deploy,
    following,
    get_deployment,
    list_deployments,
    previous_spec,
    resolve,
)
from modelhost.training.service import (
    Metric,
    append_log,
    cancel_run,
    claim_run,
    fail_if_unfinished,
    finish_run,
    get_logs,
    get_metrics,
    get_run,
    record_progress,
    submit_run,
    unfinished_runs,
)
from modelhost.training.spec import TrainSpec

FLOWERS_CSV = b"sepal,petal,color,label\n5,1.5,red,0\n6,2.25,blue,1\n7,3.0,red,2\n4,0.5,green,1\n"
MLP_CONFIG = {"in_features": 4, "out_features": 3, "hidden_sizes": [8]}
AUTH_FAILURE = "invalid, expired or revoked API key"
UTC = dt.timedelta(0)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def add_dataset(db: Database, store: LocalArtifactStore, name: str = "flowers", target: str | None = "label"):
    with db.session() as s:
        return create_dataset(s, store, name, FLOWERS_CSV, "flowers.csv", target=target)


def queued_run(db: Database, store: LocalArtifactStore) -> int:
    add_dataset(db, store)
    with db.session() as s:
        return submit_run(s, TrainSpec(dataset="flowers", register_as="flowers-mlp")).id


def running_run(db: Database, store: LocalArtifactStore) -> int:
    run_id = queued_run(db, store)
    with db.session() as s:
        assert claim_run(s, run_id, pid=4242) is True
    return run_id


def manifest(task: str = "classification") -> Manifest:
    return Manifest(
        architecture="mlp",
        config=MLP_CONFIG,
        task=task,
        signature=Signature(
            inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 4])],
            outputs=[TensorSpec(name="logits", datatype="FP32", shape=[-1, 3])],
        ),
        classes=[0, 1, 2],
    )


@pytest.fixture(scope="module")
def weights() -> bytes:
    import safetensors.torch
    import torch

    from modelhost.nn import build_model

    torch.manual_seed(0)
    return safetensors.torch.save(build_model("mlp", MLP_CONFIG).state_dict())


def register(
    db: Database, store: LocalArtifactStore, model: str, weights: bytes, task: str = "classification"
):
    with db.session() as s:
        return register_version(s, store, model, manifest(task), {WEIGHTS_FILE: weights})


class WeightsWriteFails(LocalArtifactStore):
    """A disk that fills up at the second file of a version: the manifest is already written."""

    def put(self, key, data):
        if key.endswith(WEIGHTS_FILE):
            raise StorageError(f"storage failed for artifact {key!r}: No space left on device")
        return super().put(key, data)


# --- migrations --------------------------------------------------------------------------


def test_migrate_twice_keeps_schema_and_data(db):
    with db.session() as s:
        create_key(s, "before")

    db.migrate()

    assert set(sa.inspect(db.engine).get_table_names()) == {
        "model_aliases",
        "api_keys",
        "datasets",
        "runs",
        "metrics",
        "run_logs",
        "models",
        "model_versions",
        "deployments",
        "sweeps",
        "users",
        "projects",
        "memberships",
        "audit_log",
        "alembic_version",
    }
    head = ScriptDirectory(str(resources.files("modelhost") / "migrations")).get_current_head()
    with db.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head
    with db.session() as s:
        assert [k.name for k in list_keys(s)] == ["before"]


# --- datasets ----------------------------------------------------------------------------


def test_create_dataset_infers_columns_and_records_digest(db, store):
    created = add_dataset(db, store)

    with db.session() as s:
        ds = get_dataset(s, "flowers")
    assert ds == created
    assert [(c.name, c.type) for c in ds.columns] == [
        ("sepal", "int"),
        ("petal", "float"),
        ("color", "str"),
        ("label", "int"),
    ]
    assert (ds.format, ds.num_rows, ds.target, ds.size_bytes) == ("csv", 4, "label", len(FLOWERS_CSV))
    assert ds.sha256 == sha256(FLOWERS_CSV)
    [key] = store.list("datasets/")
    assert store.get(key) == FLOWERS_CSV


def test_duplicate_dataset_name_is_rejected_and_first_kept(db, store):
    first = add_dataset(db, store)
    [key] = store.list("datasets/")

    with pytest.raises(AlreadyExists, match="'flowers'"), db.session() as s:
        create_dataset(s, store, "flowers", b"x,y\n1,2\n")

    assert store.list("datasets/") == [key]
    with db.session() as s:
        assert list_datasets(s) == [first]
        assert load_table(s, store, first.id).columns == ["sepal", "petal", "color", "label"]
    assert store.get(key, expected_sha256=first.sha256) == FLOWERS_CSV


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (b"a,b\n1,2\n3\n", InvalidInput, "line 3: 1 fields, header has 2"),
        (b"a,b,a\n1,2,3\n", InvalidInput, "column 'a' appears twice"),
        (b"", InvalidInput, "is empty"),
        (b"a,b\n\xff\xfe,1\n", InvalidInput, "is not UTF-8"),
        (pickle.dumps({"a": [1, 2]}, protocol=4), UnsafeContent, "looks like a pickle"),
    ],
    ids=["ragged-row", "duplicate-header", "empty", "not-utf8", "pickle"],
)
def test_bad_csv_leaves_no_artifact_and_no_row(db, store, data, error, match):
    add_dataset(db, store, "good")
    before = store.list("datasets/")

    with pytest.raises(error, match=match), db.session() as s:
        create_dataset(s, store, "bad", data, "upload.csv")

    assert store.list("datasets/") == before
    with db.session() as s:
        assert [d.name for d in list_datasets(s)] == ["good"]


@pytest.mark.parametrize("name", ["../x", "a/b", ""])
def test_invalid_dataset_name_is_refused_before_storage(db, store, name):
    with pytest.raises(InvalidInput, match="invalid dataset name"), db.session() as s:
        create_dataset(s, store, name, FLOWERS_CSV)

    assert store.list() == []
    with db.session() as s:
        assert list_datasets(s) == []


def test_target_must_be_a_column(db, store):
    with pytest.raises(InvalidInput, match="target column 'species' is not in"), db.session() as s:
        create_dataset(s, store, "flowers", FLOWERS_CSV, target="species")

    assert store.list() == []
    with db.session() as s:
        assert list_datasets(s) == []


def test_delete_dataset_removes_row_and_artifacts(db, store):
    add_dataset(db, store, "keep")
    kept_keys = store.list("datasets/")
    add_dataset(db, store, "drop")
    assert len(store.list("datasets/")) == 2

    with db.session() as s:
        delete_dataset(s, store, "drop")

    assert store.list("datasets/") == kept_keys
    with db.session() as s:
        assert [d.name for d in list_datasets(s)] == ["keep"]
        with pytest.raises(NotFound, match="'drop'"):
            get_dataset(s, "drop")


def test_load_table_round_trips(db, store):
    ds = add_dataset(db, store)

    with db.session() as s:
        table = load_table(s, store, ds.id)

    assert table.columns == ["sepal", "petal", "color", "label"]
    assert table.types == ["int", "float", "str", "int"]
    assert table.rows == [
        ["5", "1.5", "red", "0"],
        ["6", "2.25", "blue", "1"],
        ["7", "3.0", "red", "2"],
        ["4", "0.5", "green", "1"],
    ]
    assert table.numeric(["sepal", "petal"]).tolist() == [[5.0, 1.5], [6.0, 2.25], [7.0, 3.0], [4.0, 0.5]]


def test_dataset_row_rolls_back_with_its_session(db, store):
    def upload_then_fail() -> None:
        with db.session() as s:
            create_dataset(s, store, "flowers", FLOWERS_CSV)
            raise RuntimeError("a later step of the same unit of work failed")

    with pytest.raises(RuntimeError, match="unit of work failed"):
        upload_then_fail()

    with db.session() as s:
        assert list_datasets(s) == []


# --- runs --------------------------------------------------------------------------------


def test_submit_run_queues_with_the_datasets_target(db, store):
    ds = add_dataset(db, store)

    with db.session() as s:
        run = submit_run(
            s, TrainSpec(dataset="flowers", features=["sepal", "petal"], register_as="flowers-mlp")
        )

    with db.session() as s:
        stored = get_run(s, run.id)
    assert stored == run
    assert stored.model_dump(exclude={"id", "spec", "created_at"}) == {
        "name": "flowers-mlp",
        "project": "default",
        "status": "queued",
        "dataset_id": ds.id,
        "model_name": "flowers-mlp",
        "version_id": None,
        "error": None,
        "cancel_requested": False,
        "worker_pid": None,
        "attempt": 1,
        "worker_id": None,
        "heartbeat_at": None,
        "lease_expires_at": None,
        "step": 0,
        "total_steps": 0,
        "started_at": None,
        "finished_at": None,
    }
    assert (stored.spec["target"], stored.spec["features"]) == ("label", ["sepal", "petal"])


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ({"dataset": "nope"}, NotFound, "dataset 'nope' not found"),
        ({"dataset": "untargeted"}, InvalidInput, "target: dataset 'untargeted' has no default target"),
        ({"dataset": "flowers", "target": "species"}, InvalidInput, "target: column 'species' is not in"),
        (
            {"dataset": "flowers", "features": ["sepal", "width"]},
            InvalidInput,
            "features: column 'width' is not in",
        ),
        (
            {"dataset": "flowers", "features": ["color"]},
            InvalidInput,
            "column 'color' holds text; list it in",
        ),
        ({"dataset": "flowers", "features": ["label"]}, InvalidInput, "features: 'label' is the target"),
        (
            {"dataset": "flowers", "target": "color", "task": "regression"},
            InvalidInput,
            "regression target must be numeric",
        ),
    ],
    ids=[
        "unknown-dataset",
        "no-target",
        "unknown-target",
        "unknown-feature",
        "text-feature",
        "target-as-feature",
        "text-regression-target",
    ],
)
def test_submit_run_validates_against_the_dataset(db, store, spec, error, match):
    add_dataset(db, store, "flowers")
    add_dataset(db, store, "untargeted", target=None)

    with pytest.raises(error, match=match), db.session() as s:
        submit_run(s, TrainSpec(**spec))

    with db.session() as s:
        assert unfinished_runs(s) == []


def test_claim_run_is_atomic(db, store):
    run_id = queued_run(db, store)

    with db.session() as s:
        assert claim_run(s, run_id, pid=101) is True
    with db.session() as s:
        assert claim_run(s, run_id, pid=202) is False

    with db.session() as s:
        run = get_run(s, run_id)
    assert (run.status, run.worker_pid) == ("running", 101)
    assert run.started_at is not None and run.started_at.utcoffset() == UTC


def test_concurrent_claims_have_exactly_one_winner(db, store):
    run_id = queued_run(db, store)
    start = threading.Barrier(4)

    def claim(pid: int) -> bool:
        start.wait(timeout=10)
        with db.session() as s:
            return claim_run(s, run_id, pid)

    with ThreadPoolExecutor(4) as pool:
        won = dict(zip(range(1, 5), pool.map(claim, range(1, 5)), strict=True))

    assert sorted(won.values()) == [False, False, False, True]
    with db.session() as s:
        assert get_run(s, run_id).worker_pid == next(pid for pid, ok in won.items() if ok)


def test_cancel_queued_run_is_immediate_and_unclaimable(db, store):
    run_id = queued_run(db, store)

    with db.session() as s:
        cancelled = cancel_run(s, run_id)
    assert (cancelled.status, cancelled.cancel_requested) == ("cancelled", True)
    assert cancelled.finished_at is not None

    with db.session() as s:
        assert claim_run(s, run_id, pid=7) is False
    with db.session() as s:
        run = get_run(s, run_id)
    assert (run.status, run.worker_pid, run.started_at) == ("cancelled", None, None)


def test_cancel_running_run_is_requested_and_seen_at_next_progress(db, store):
    run_id = running_run(db, store)
    with db.session() as s:
        assert record_progress(s, run_id, 1, 10, {"loss": 2.0}) is False

    with db.session() as s:
        requested = cancel_run(s, run_id)
    assert (requested.status, requested.cancel_requested, requested.finished_at) == ("running", True, None)

    with db.session() as s:
        assert record_progress(s, run_id, 2, 10, {"loss": 1.5}) is True


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_cancel_finished_run_conflicts(db, store, status):
    run_id = running_run(db, store)
    with db.session() as s:
        finish_run(s, run_id, status)

    with pytest.raises(Conflict, match=f"run {run_id} already {status}"), db.session() as s:
        cancel_run(s, run_id)

    with db.session() as s:
        assert (get_run(s, run_id).status, get_run(s, run_id).cancel_requested) == (status, False)


def test_progress_metrics_read_back_in_order(db, store):
    run_id = running_run(db, store)

    with db.session() as s:
        record_progress(s, run_id, 1, 4, {"loss": 1.25, "accuracy": 0.5}, epoch=0)
    with db.session() as s:
        record_progress(s, run_id, 2, 4, {"loss": 0.75, "accuracy": 0.875}, epoch=1)

    with db.session() as s:
        metrics, losses, run = get_metrics(s, run_id), get_metrics(s, run_id, key="loss"), get_run(s, run_id)
    assert metrics == [
        Metric(key="loss", step=1, epoch=0, value=1.25),
        Metric(key="accuracy", step=1, epoch=0, value=0.5),
        Metric(key="loss", step=2, epoch=1, value=0.75),
        Metric(key="accuracy", step=2, epoch=1, value=0.875),
    ]
    assert [(m.step, m.value) for m in losses] == [(1, 1.25), (2, 0.75)]
    assert (run.step, run.total_steps) == (2, 4)


def test_logs_page_with_after(db, store):
    run_id = running_run(db, store)
    with db.session() as s:
        for line in ("epoch 1", "epoch 2", "epoch 3"):
            append_log(s, run_id, line)

    with db.session() as s:
        logs = get_logs(s, run_id)
        assert [entry.line for entry in logs] == ["epoch 1", "epoch 2", "epoch 3"]
        assert [entry.line for entry in get_logs(s, run_id, after=logs[0].id)] == ["epoch 2", "epoch 3"]
        assert get_logs(s, run_id, after=logs[-1].id) == []
        assert [entry.line for entry in get_logs(s, run_id, after=logs[0].id, limit=1)] == ["epoch 2"]
    assert logs[0].id < logs[1].id < logs[2].id
    assert all(entry.created_at.utcoffset() == UTC for entry in logs)


def test_metrics_and_logs_of_unknown_run_are_not_found(db):
    with db.session() as s:
        with pytest.raises(NotFound, match="run 999 not found"):
            get_metrics(s, 999)
        with pytest.raises(NotFound, match="run 999 not found"):
            get_logs(s, 999)


def test_fail_if_unfinished_leaves_finished_runs_alone(db, store):
    queued = queued_run(db, store)
    with db.session() as s:
        running = submit_run(s, TrainSpec(dataset="flowers")).id
        done = submit_run(s, TrainSpec(dataset="flowers")).id
    with db.session() as s:
        assert claim_run(s, running, pid=1) and claim_run(s, done, pid=2)
        finish_run(s, done, "succeeded", version_id=None)

    with db.session() as s:
        changed = [fail_if_unfinished(s, r, "worker exited with code -9") for r in (queued, running, done)]

    assert changed == [True, True, False]
    with db.session() as s:
        runs = [get_run(s, r) for r in (queued, running, done)]
        assert unfinished_runs(s) == []
    assert [(r.status, r.error) for r in runs] == [
        ("failed", "worker exited with code -9"),
        ("failed", "worker exited with code -9"),
        ("succeeded", None),
    ]
    assert all(r.finished_at is not None for r in runs)


def test_dataset_in_use_by_a_run_cannot_be_deleted(db, store):
    queued_run(db, store)
    keys = store.list("datasets/")

    with pytest.raises(Conflict, match="dataset 'flowers' is used by training runs"), db.session() as s:
        delete_dataset(s, store, "flowers")

    assert store.list("datasets/") == keys
    with db.session() as s:
        ds = get_dataset(s, "flowers")
        assert load_table(s, store, ds.id).rows[0] == ["5", "1.5", "red", "0"]


# --- registry ----------------------------------------------------------------------------


def test_versions_are_numbered_and_latest_is_default(db, store, weights):
    registered = [register(db, store, "iris", weights) for _ in range(3)]

    assert [v.number for v in registered] == [1, 2, 3]
    with db.session() as s:
        assert get_version(s, "iris") == registered[2]
        assert get_version(s, "iris", 2) == registered[1]
        assert [v.number for v in list_versions(s, "iris")] == [1, 2, 3]
        with pytest.raises(NotFound, match="model 'iris' has no version 4"):
            get_version(s, "iris", 4)
        with pytest.raises(NotFound, match="model 'ghost' not found"):
            get_version(s, "ghost")
    assert registered[0].manifest == manifest()
    assert registered[0].created_at.utcoffset() == UTC


def test_version_files_are_recorded_with_their_sha256(db, store, weights):
    version = register(db, store, "iris", weights)

    keys = store.list("models/iris/")
    [prefix] = {k.rsplit("/", 1)[0] + "/" for k in keys}
    assert keys == [prefix + MANIFEST_FILE, prefix + WEIGHTS_FILE]
    assert version.files == {
        MANIFEST_FILE: sha256(store.get(prefix + MANIFEST_FILE)),
        WEIGHTS_FILE: sha256(weights),
    }
    assert Manifest.model_validate_json(store.get(prefix + MANIFEST_FILE)) == manifest()
    with db.session() as s:
        assert read_version_file(s, store, version, WEIGHTS_FILE) == weights


def test_read_weights_refuses_tampered_bytes(db, store, weights):
    version = register(db, store, "iris", weights)
    [weights_key] = [k for k in store.list("models/iris/") if k.endswith(WEIGHTS_FILE)]
    path = store.root / weights_key
    tampered = bytearray(path.read_bytes())
    tampered[-1] ^= 0xFF
    path.write_bytes(bytes(tampered))

    with pytest.raises(ArtifactCorrupted, match=WEIGHTS_FILE), db.session() as s:
        read_version_file(s, store, version, WEIGHTS_FILE)


def test_task_mismatch_conflicts_and_stores_nothing(db, store, weights):
    register(db, store, "iris", weights)
    keys = store.list("models/iris/")

    with pytest.raises(Conflict, match="model 'iris' is a classification model; this version is regression"):
        register(db, store, "iris", weights, task="regression")

    assert store.list("models/iris/") == keys
    with db.session() as s:
        assert [v.number for v in list_versions(s, "iris")] == [1]


def test_failed_registration_leaves_no_artifacts(db, store, weights):
    register(db, store, "iris", weights)
    keys = store.list("models/")
    failing = WeightsWriteFails(store.root)

    for model in ("iris", "fresh"):
        with pytest.raises(StorageError, match="No space left"), db.session() as s:
            register_version(s, failing, model, manifest(), {WEIGHTS_FILE: weights})

    assert store.list("models/") == keys
    assert store.list("models/fresh/") == []
    with db.session() as s:
        assert [v.number for v in list_versions(s, "iris")] == [1]
        assert read_version_file(s, store, get_version(s, "iris"), WEIGHTS_FILE) == weights


def test_failed_first_registration_leaves_no_model(db, store, weights):
    with pytest.raises(StorageError), db.session() as s:
        register_version(s, WeightsWriteFails(store.root), "fresh", manifest(), {WEIGHTS_FILE: weights})

    with db.session() as s:
        assert list_models(s) == []


def test_list_models_reports_latest_version(db, store, weights):
    register(db, store, "iris", weights)
    register(db, store, "wine", weights, task="regression")
    register(db, store, "iris", weights)

    with db.session() as s:
        models = list_models(s)
    assert [(m.name, m.task, m.latest_version) for m in models] == [
        ("iris", "classification", 2),
        ("wine", "regression", 1),
    ]


# --- deployments -------------------------------------------------------------------------


def put(s, name: str, model: str, version=None, replace: bool = True, **spec):
    """What the manager does, minus loading: resolve the spec's versions, then write the row."""
    full = DeploySpec(model=model, version=version, **spec)
    return deploy(s, name, full, resolve(s, name, full, replace), replace)


def test_deploy_creates_then_repoints(db, store, weights):
    v1 = register(db, store, "iris", weights)
    with db.session() as s:
        first, created = put(s, "web", "iris")
    assert created is True
    assert first.model_dump(include={"name", "model", "version", "version_id", "runtime"}) == {
        "name": "web",
        "model": "iris",
        "version": 1,
        "version_id": v1.id,
        "runtime": "torch",
    }

    v2 = register(db, store, "iris", weights)
    with db.session() as s:
        second, created = put(s, "web", "iris", replace=True)
    assert created is False
    assert (second.id, second.version, second.version_id) == (first.id, 2, v2.id)
    assert second.updated_at >= first.updated_at

    with db.session() as s:
        back, created = put(s, "web", "iris", version=1)
        assert (created, back.version) == (False, 1)
    with db.session() as s:
        assert [(d.name, d.version) for d in list_deployments(s)] == [("web", 1)]


def test_deploy_without_replace_refuses_existing_name(db, store, weights):
    register(db, store, "iris", weights)
    register(db, store, "iris", weights)
    with db.session() as s:
        put(s, "web", "iris", version=1)

    with pytest.raises(AlreadyExists, match="deployment 'web' already exists"), db.session() as s:
        put(s, "web", "iris", version=2, replace=False)

    with db.session() as s:
        assert get_deployment(s, "web").version == 1


def test_deploy_unknown_model_or_version_is_not_found(db, store, weights):
    with pytest.raises(NotFound, match="model 'ghost' not found"), db.session() as s:
        put(s, "web", "ghost")
    register(db, store, "iris", weights)
    with pytest.raises(NotFound, match="model 'iris' has no version 5"), db.session() as s:
        put(s, "web", "iris", version=5)

    with db.session() as s:
        assert list_deployments(s) == []


def test_delete_deployment(db, store, weights):
    register(db, store, "iris", weights)
    with db.session() as s:
        put(s, "web", "iris")
        put(s, "api", "iris")

    with db.session() as s:
        delete_deployment(s, "web")

    with db.session() as s:
        assert [d.name for d in list_deployments(s)] == ["api"]
        with pytest.raises(NotFound, match="deployment 'web' not found"):
            get_deployment(s, "web")
        with pytest.raises(NotFound, match="deployment 'web' not found"):
            delete_deployment(s, "web")


# --- auth --------------------------------------------------------------------------------


def test_create_key_stores_only_its_hash(db):
    with db.session() as s:
        created = create_key(s, "ci", role="member")

    assert created.key.startswith("mh_")
    assert len(created.key) >= 32
    assert created.prefix == created.key[:8]  # "mh_" and 5 characters: tells keys apart, finds none
    with db.session() as s:
        row = s.get_one(ApiKeyRow, created.id)
        assert row.key_hash == sha256(created.key.encode())
        assert created.key not in (row.key_hash, row.prefix, row.name)
        principal = authenticate(s, created.key)
    assert (principal.key_id, principal.name, principal.role) == (created.id, "ci", "member")


def _expire_clock(monkeypatch: pytest.MonkeyPatch, hours: float) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)
    monkeypatch.setattr("modelhost.auth.service.utcnow", lambda: later)


@pytest.mark.parametrize("failure", ["unknown-key", "same-prefix", "revoked", "expired"])
def test_authentication_failures_look_alike(db, monkeypatch, failure):
    with db.session() as s:
        created = create_key(s, "ci", expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
        assert authenticate(s, created.key).key_id == created.id
    presented = created.key
    if failure == "unknown-key":
        presented = "mh_" + "x" * 43
    elif failure == "same-prefix":
        presented = created.key[:12] + "y" * (len(created.key) - 12)
    elif failure == "revoked":
        with db.session() as s:
            assert revoke_key(s, created.id).revoked_at is not None
    else:
        _expire_clock(monkeypatch, hours=2)

    with pytest.raises(Unauthenticated) as exc, db.session() as s:
        authenticate(s, presented)
    assert exc.value.message == AUTH_FAILURE


def test_ensure_admin_key_creates_once(db):
    with db.session() as s:
        admin = ensure_admin_key(s, None)
    assert admin is not None
    assert (admin.name, admin.role, admin.key[:3]) == ("admin", "admin", "mh_")

    with db.session() as s:
        assert ensure_admin_key(s, None) is None
        assert ensure_admin_key(s, "mh_" + "z" * 40) is None
        assert [k.id for k in list_keys(s)] == [admin.id]
        assert authenticate(s, admin.key).role == "admin"


def test_configured_admin_key_is_used_verbatim(db):
    configured = "mh_" + "a" * 29  # exactly 32 characters
    with db.session() as s:
        admin = ensure_admin_key(s, configured)
    assert admin is not None and admin.key == configured
    with db.session() as s:
        assert authenticate(s, configured).key_id == admin.id


@pytest.mark.parametrize("configured", ["mh_" + "a" * 28, "mh_" + "a" * 28 + " b", "mh_" + "é" * 30])
def test_configured_admin_key_must_be_long_printable_ascii(db, configured):
    with pytest.raises(InvalidInput, match="at least 32 printable ASCII characters"), db.session() as s:
        ensure_admin_key(s, configured)

    with db.session() as s:
        assert list_keys(s) == []


def test_timestamps_come_back_aware_in_utc(db, store):
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    with db.session() as s:
        create_key(s, "ci", expires_at=expires)
    running_run(db, store)

    with db.session() as s:
        [key], [ds], run = list_keys(s), list_datasets(s), unfinished_runs(s)[0]
    stamps = [key.created_at, key.expires_at, ds.created_at, run.created_at, run.started_at]
    assert [t.utcoffset() for t in stamps] == [UTC] * 5
    assert key.expires_at == expires


def test_expiry_given_in_another_zone_keeps_its_instant(db):
    india = dt.timezone(dt.timedelta(hours=5, minutes=30))
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).astimezone(india)
    with db.session() as s:
        create_key(s, "ci", expires_at=expires)

    with db.session() as s:
        [key] = list_keys(s)
    assert key.expires_at == expires
    assert key.expires_at.utcoffset() == UTC


def test_naive_expiry_is_invalid_input(db):
    with pytest.raises(InvalidInput, match="expires_at"), db.session() as s:
        create_key(s, "ci", expires_at=dt.datetime.now() + dt.timedelta(days=1))


@pytest.mark.parametrize("db", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_timestamps_are_utc_whatever_the_servers_timezone(db):
    with db.engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER DATABASE {db.engine.url.database} SET TimeZone TO 'Asia/Kolkata'")
    db.dispose()  # new connections pick the setting up
    with db.session() as s:
        created = create_key(s, "ci")

    with db.session() as s:
        [key] = list_keys(s)
    assert key.created_at == created.created_at
    assert key.created_at.utcoffset() == UTC


def test_traffic_split_shadow_and_rollback_state(db, store, weights):
    for _ in range(3):
        register(db, store, "iris", weights)
    with db.session() as s:
        put(s, "web", "iris", version=1)
        split, _ = put(
            s, "web", "iris", traffic=[{"version": 1, "weight": 90}, {"version": 2, "weight": 10}], shadow=3
        )
    assert [(t.version, t.weight) for t in split.targets] == [(1, 90.0), (2, 10.0)]
    assert split.version == 1 and split.shadow is not None and split.shadow.version == 3
    assert split.can_roll_back is True
    with db.session() as s:
        assert previous_spec(s, "web") == DeploySpec(model="iris", version=1)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"version": 1, "traffic": [{"version": 2, "weight": 1}]}, "either 'version' or 'traffic'"),
        ({"traffic": [{"version": 1, "weight": 5}, {"version": 1, "weight": 5}]}, "may appear once"),
        ({"traffic": [{"version": 1, "weight": 0}]}, "greater than 0"),
    ],
)
def test_bad_deploy_specs_are_named(spec, message):
    with pytest.raises(ValidationError, match=message):
        DeploySpec(model="iris", **spec)


def test_shadow_cannot_take_live_traffic(db, store, weights):
    register(db, store, "iris", weights)
    with pytest.raises(InvalidInput, match="shadow version 1 also takes live traffic"), db.session() as s:
        put(s, "web", "iris", version=1, shadow=1)


def test_aliases_resolve_move_and_are_followed(db, store, weights):
    for _ in range(2):
        register(db, store, "iris", weights)
    with db.session() as s:
        set_alias(s, "iris", "production", 1)
        dep, _ = put(s, "web", "iris", version="production")
        put(s, "pinned", "iris", version=2)
        assert dep.version == 1 and dep.spec.version == "production"
        set_alias(s, "iris", "production", 2)
        assert list_aliases(s, "iris") == {"production": 2}
        assert [d.name for d in following(s, "iris", "production")] == ["web"]
        assert resolve_version(s, "iris", "production").number == 2
    with pytest.raises(InvalidInput, match="cannot be a number"), db.session() as s:
        set_alias(s, "iris", "42", 1)
    with pytest.raises(NotFound, match="model 'iris' has no alias 'staging'"), db.session() as s:
        put(s, "web", "iris", version="staging")
