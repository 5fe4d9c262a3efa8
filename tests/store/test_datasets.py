"""Datasets of every kind through the service functions, on SQLite and on PostgreSQL: the kind
column, the summary each kind has, load_source, and the 0005 migration of existing rows."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from modelhost.artifacts.local import LocalArtifactStore
from modelhost.datasets.service import (
    ArraysSummary,
    ImagesSummary,
    TableSummary,
    TextSummary,
    create_dataset,
    create_sample_dataset,
    get_dataset,
    list_datasets,
    load_table,
)
from modelhost.datasets.sources import ArraySource, ImageSource, TableSource, TextSource, load_source
from modelhost.db import Database
from modelhost.errors import ArtifactCorrupted, InvalidInput, NotFound, UnsafeContent
from tests.conftest import fresh_postgres_db
from tests.unit.datasets.craft import image_bytes, npy_bytes, npz_bytes, symlink_entry, zip_bytes

GREY = np.arange(12, dtype=np.uint8).reshape(3, 4)
RGB = np.dstack([GREY, GREY, GREY + 100])
IMAGES_ZIP = zip_bytes(
    [
        ("pets/cat/1.png", image_bytes(GREY)),
        ("pets/cat/2.png", image_bytes(RGB)),
        ("pets/dog/3.png", image_bytes(GREY[:2])),
    ]
)
TEXT = b"To be, or not to be:\nthat is the question.\n"


def upload(db: Database, store: LocalArtifactStore, name: str, data: bytes, filename: str, **kw):
    with db.session() as s:
        return create_dataset(s, store, name, data, filename, **kw)


def load(db: Database, store: LocalArtifactStore, dataset_id: int):
    with db.session() as s:
        return load_source(s, store, dataset_id)


def test_jsonl_and_npy_are_tables(db, store):
    jsonl = upload(db, store, "j", b'{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n', "d.jsonl", target="b")
    npy = upload(
        db, store, "n", npy_bytes(np.array([[1.5, 2.0], [3.0, 4.0], [5.0, 6.0]])), "d.npy", target="x1"
    )

    assert (jsonl.kind, jsonl.format, jsonl.num_rows, jsonl.target) == ("table", "jsonl", 2, "b")
    assert [(c.name, c.type) for c in jsonl.columns] == [("a", "int"), ("b", "str")]
    assert jsonl.summary == TableSummary(columns=jsonl.columns)
    assert (npy.kind, npy.format, npy.num_rows, [c.name for c in npy.columns]) == (
        "table",
        "npy",
        3,
        ["x0", "x1"],
    )
    source = load(db, store, npy.id)
    assert isinstance(source, TableSource) and source.table.numeric(["x0"]).ravel().tolist() == [
        1.5,
        3.0,
        5.0,
    ]
    with db.session() as s:
        assert load_table(s, store, jsonl.id).column("b") == ["x", "y"]


def test_npz_is_arrays_with_y_as_the_default_target(db, store):
    x, y = np.zeros((4, 2, 3), dtype=np.float32), np.array([0, 1, 1, 0], dtype=np.int64)
    ds = upload(db, store, "arr", npz_bytes(x=x, y=y), "d.npz")

    assert (ds.kind, ds.format, ds.num_rows, ds.target, ds.columns) == ("arrays", "npz", 4, "y", [])
    assert isinstance(ds.summary, ArraysSummary)
    assert [(a.name, a.shape, a.dtype) for a in ds.summary.arrays] == [
        ("x", [4, 2, 3], "float32"),
        ("y", [4], "int64"),
    ]
    source = load(db, store, ds.id)
    assert isinstance(source, ArraySource) and np.array_equal(source.arrays["y"], y)
    with (
        pytest.raises(InvalidInput, match=r"target array 'label' is not in 'd.npz'; arrays: x, y"),
        db.session() as s,
    ):
        create_dataset(s, store, "arr2", npz_bytes(x=x, y=y), "d.npz", target="label")


def test_image_folders_are_images_with_classes(db, store):
    ds = upload(db, store, "pets", IMAGES_ZIP, "pets.zip", description="two cats, one dog")

    assert (ds.kind, ds.format, ds.num_rows, ds.target) == ("images", "zip", 3, None)
    assert ds.summary == ImagesSummary(
        num_images=3,
        classes=[{"name": "cat", "count": 2}, {"name": "dog", "count": 1}],
        channels=[1, 3],
        min_size=[2, 4],
        max_size=[3, 4],
    )
    source = load(db, store, ds.id)
    assert isinstance(source, ImageSource)
    assert (source.labels, source.classes) == (["cat", "cat", "dog"], ["cat", "dog"])
    assert np.array_equal(source.images[1], RGB)
    with pytest.raises(InvalidInput, match="labelled by their class folders"), db.session() as s:
        create_dataset(s, store, "pets2", IMAGES_ZIP, "pets.zip", target="cat")


def test_text_is_text_with_character_counts(db, store):
    ds = upload(db, store, "hamlet", TEXT, "hamlet.txt")

    assert (ds.kind, ds.format, ds.num_rows) == ("text", "text", 2)
    assert ds.summary == TextSummary(num_chars=len(TEXT), num_lines=2, vocab_size=len(set(TEXT.decode())))
    assert load(db, store, ds.id) == TextSource(TEXT.decode())
    [key] = [k for k in store.list("datasets/") if k.endswith(".txt")]
    assert store.get(key) == TEXT  # stored as it came
    with db.session() as s:
        assert get_dataset(s, "hamlet") == ds
        assert [d.kind for d in list_datasets(s)] == ["text"]


def test_the_format_field_overrides_the_suffix(db, store):
    ds = upload(db, store, "lines", b'{"a": 1}\n', "export.data", format="jsonl")
    assert (ds.kind, ds.format) == ("table", "jsonl")
    with pytest.raises(InvalidInput, match=r"cannot tell the format of 'export.data'"), db.session() as s:
        create_dataset(s, store, "lines2", b'{"a": 1}\n', "export.data")


def test_load_table_refuses_other_kinds(db, store):
    ds = upload(db, store, "hamlet", TEXT, "hamlet.txt")
    with pytest.raises(InvalidInput, match=f"dataset {ds.id} holds text, not a table"), db.session() as s:
        load_table(s, store, ds.id)
    with pytest.raises(NotFound, match="dataset 999 not found"):
        load(db, store, 999)


def test_tampered_bytes_are_refused_on_load(db, store):
    ds = upload(db, store, "pets", IMAGES_ZIP, "pets.zip")
    [key] = store.list("datasets/")
    path = store.root / key
    tampered = bytearray(path.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF
    path.write_bytes(bytes(tampered))

    with pytest.raises(ArtifactCorrupted, match="does not match"):
        load(db, store, ds.id)


@pytest.mark.parametrize(
    ("data", "filename", "error", "match"),
    [
        (zip_bytes([("../cat/a.png", image_bytes(GREY))]), "x.zip", UnsafeContent, "contains '..'"),
        (zip_bytes([symlink_entry("cat/a.png", "/etc/passwd")]), "x.zip", UnsafeContent, "symbolic link"),
        (zip_bytes([("cat/a.png", bytes(32 << 20))]), "x.zip", UnsafeContent, "decompression bomb"),
        (b"\x80\x04\x95" + bytes(40), "x.npz", UnsafeContent, "looks like a pickle"),
        (b"\x89PNG not really", "x.tar", InvalidInput, "not a readable tar archive"),
        (b'{"a": 1}\n{"b": 1}\n', "x.jsonl", InvalidInput, "line 2: keys differ"),
    ],
    ids=["traversal", "symlink", "bomb", "pickle-npz", "not-tar", "jsonl-keys"],
)
def test_refused_uploads_leave_no_artifact_and_no_row(db, store, data, filename, error, match):
    upload(db, store, "good", TEXT, "good.txt")
    before = store.list("datasets/")

    with pytest.raises(error, match=match), db.session() as s:
        create_dataset(s, store, "bad", data, filename)

    assert store.list("datasets/") == before
    with db.session() as s:
        assert [d.name for d in list_datasets(s)] == ["good"]


@pytest.mark.parametrize("sample", ["breast_cancer", "digits_images", "classics"])
def test_new_samples_are_created_with_their_kinds(db, store, sample):
    with db.session() as s:
        ds = create_sample_dataset(s, store, sample)  # type: ignore[arg-type]
    expected = {
        "breast_cancer": ("table", 569),
        "digits_images": ("images", 1797),
        "classics": ("text", None),
    }
    kind, rows = expected[sample]
    assert ds.kind == kind and ds.name == sample
    if rows is not None:
        assert ds.num_rows == rows
    if sample == "digits_images":
        assert isinstance(ds.summary, ImagesSummary)
        assert [c.name for c in ds.summary.classes] == [str(d) for d in range(10)]
        assert (ds.summary.min_size, ds.summary.max_size, ds.summary.channels) == ([8, 8], [8, 8], [1])
    if sample == "classics":
        assert isinstance(ds.summary, TextSummary) and 50_000 <= ds.summary.num_chars <= 200_000


# --- migration 0005 ----------------------------------------------------------------------

FLOWERS_CSV = b"sepal,color,label\n5.5,red,0\n6,blue,1\n"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A Database with no schema at all, so a test can migrate it step by step."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'old.db'}"
        else:
            url = stack.enter_context(fresh_postgres_db(request.getfixturevalue("postgres_admin")))
        database = Database(url)
        stack.callback(database.dispose)
        yield database


def upgrade_to(db: Database, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("modelhost") / "migrations"))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def test_datasets_from_before_kinds_become_tables(empty_db, store):
    upgrade_to(empty_db, "0004")
    digest = store.put("datasets/old/data.csv", io.BytesIO(FLOWERS_CSV))
    columns = [
        {"name": "sepal", "type": "float"},
        {"name": "color", "type": "str"},
        {"name": "label", "type": "int"},
    ]
    old = sa.table(
        "datasets",
        *(sa.column(c) for c in ("name", "format", "artifact_key", "sha256", "size_bytes", "num_rows")),
        sa.column("columns", sa.JSON),
        *(sa.column(c) for c in ("target", "description", "created_at")),
    )
    with empty_db.engine.begin() as conn:
        conn.execute(
            old.insert().values(
                name="flowers",
                format="csv",
                artifact_key="datasets/old/data.csv",
                sha256=digest.sha256,
                size_bytes=digest.size,
                num_rows=2,
                columns=columns,
                target="label",
                description="",
                created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            )
        )

    empty_db.migrate()

    with empty_db.session() as s:
        ds = get_dataset(s, "flowers")
        source = load_source(s, store, ds.id)
    assert (ds.kind, ds.format, ds.num_rows, ds.target) == ("table", "csv", 2, "label")
    assert ds.summary == TableSummary(columns=ds.columns)
    assert [c.name for c in ds.columns] == ["sepal", "color", "label"]
    assert isinstance(source, TableSource) and source.table.column("color") == ["red", "blue"]
    assert ds.sha256 == hashlib.sha256(FLOWERS_CSV).hexdigest()
