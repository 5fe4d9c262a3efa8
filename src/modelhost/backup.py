"""Backups of a whole platform, metadata and artifacts, taken while the server runs, and restores.

A backup is a folder (0700; every file in it 0600)::

    manifest.json        format, created_at, database kind, every artifact: key, sha256, size, key id
    metadata.sqlite      SQLite: a copy made with the online backup API
    metadata.pgdump      PostgreSQL: ``pg_dump --format=custom``
    artifacts/<key>      the objects exactly as stored

Consistency: the platform writes an artifact before any metadata refers to it and deletes it
only after the reference is gone. So the metadata snapshot is taken first (one read
transaction), then the artifacts are copied; objects written after the snapshot are copied
too and are harmless. The only way to miss one is a delete that lands between the snapshot
and the copy; the backup checks that every artifact the snapshot refers to was copied, and
fails (asking to run it again) if not.

Artifacts are copied as stored: when encryption at rest is on they stay encrypted, and the
key (``MODELHOST_ENCRYPTION_KEY`` or the key file, with any old keys) is needed to use the
restored platform. Keep the key apart from the backup. The manifest names the key ids.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, make_url

import modelhost
from modelhost.artifacts import ArtifactStore, open_artifacts, validate_key
from modelhost.artifacts.crypto import HEADER_SIZE, parse_header
from modelhost.artifacts.keyring import keyring_from_settings
from modelhost.config import Settings
from modelhost.datasets.tables import DatasetRow
from modelhost.errors import (
    AlreadyExists,
    ArtifactCorrupted,
    Conflict,
    InvalidInput,
    NotFound,
    PlatformError,
    StorageError,
)
from modelhost.registry.tables import ModelVersionRow

FORMAT = 1
MANIFEST = "manifest.json"
ARTIFACTS = "artifacts"
DB_FILES = {"sqlite": "metadata.sqlite", "postgresql": "metadata.pgdump"}
DatabaseKind = Literal["sqlite", "postgresql"]
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ArtifactEntry:
    """One stored object: its key, the sha256 and size of its bytes as stored, and the id of
    the key it is encrypted with (None: in the clear)."""

    key: str
    sha256: str
    size: int
    key_id: str | None


@dataclass(frozen=True)
class BackupSummary:
    path: Path
    database: DatabaseKind
    artifacts: int
    bytes: int
    key_ids: list[str]


@dataclass(frozen=True)
class RestoreSummary:
    database: DatabaseKind
    artifacts: int
    missing_keys: list[str]
    """Key ids the backup's artifacts need that the settings do not configure."""


def backup(settings: Settings, dest: Path) -> BackupSummary:
    """Write a consistent backup of the platform ``settings`` name to the new folder ``dest``.

    ``dest`` must not exist or be an empty folder; on failure it is removed again.
    """
    url = make_url(settings.resolved_database_url)
    kind = _kind(url)
    store = open_artifacts(settings.resolved_artifacts_url, s3_endpoint_url=settings.s3_endpoint_url)
    with _new_folder(Path(dest)) as folder:
        db_file = folder / DB_FILES[kind]
        if kind == "sqlite":
            _snapshot_sqlite(_sqlite_path(url), db_file)
            referenced = _referenced_keys_in_file(db_file)
        else:
            referenced = _snapshot_postgres(url, db_file)
        entries = _copy_artifacts(store, folder / ARTIFACTS)
        missing = sorted(referenced - {e.key for e in entries})
        if missing:
            raise Conflict(
                f"{len(missing)} artifact(s) the metadata refers to were deleted while the backup ran "
                f"(first: {missing[0]!r}); run the backup again"
            )
        key_ids = sorted({e.key_id for e in entries if e.key_id})
        manifest = {
            "format": FORMAT,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "modelhost_version": modelhost.__version__,
            "database": kind,
            "database_file": db_file.name,
            "key_ids": key_ids,
            "artifacts": [asdict(e) for e in entries],
        }
        _write_private(folder / MANIFEST, json.dumps(manifest, indent=1).encode())
    return BackupSummary(folder, kind, len(entries), sum(e.size for e in entries), key_ids)


def restore(settings: Settings, src: Path, force: bool = False) -> RestoreSummary:
    """Restore the backup in ``src`` into the database and artifact store ``settings`` name.

    Both must be empty (a fresh home, an empty PostgreSQL database, an empty bucket prefix)
    unless ``force``, which replaces what is there. Stop any server on the target first.
    Artifacts go first and are checked against the manifest; the database comes last, so a
    failed restore never leaves metadata pointing at missing bytes.
    """
    src = Path(src)
    manifest = _read_manifest(src)
    url = make_url(settings.resolved_database_url)
    kind = _kind(url)
    if manifest["database"] != kind:
        raise InvalidInput(f"the backup holds a {manifest['database']} database; the target is {kind}")
    store = open_artifacts(settings.resolved_artifacts_url, s3_endpoint_url=settings.s3_endpoint_url)
    if not force:
        _require_empty(url, kind, store)
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if force:
        store.delete_prefix("")
    entries = [ArtifactEntry(**e) for e in manifest["artifacts"]]
    for entry in entries:
        _restore_artifact(src / ARTIFACTS, store, entry)
    db_file = src / manifest["database_file"]
    if kind == "sqlite":
        _restore_sqlite(db_file, _sqlite_path(url), force)
    else:
        _restore_postgres(db_file, url, force)
    keyring = keyring_from_settings(settings)
    known = {k.hex() for k in keyring.by_id} if keyring else set()
    return RestoreSummary(kind, len(entries), [k for k in manifest["key_ids"] if k not in known])


# --- metadata


def _kind(url: URL) -> DatabaseKind:
    if url.get_backend_name() == "sqlite":
        return "sqlite"
    if url.get_backend_name() == "postgresql":
        return "postgresql"
    raise InvalidInput(f"cannot back up a {url.get_backend_name()} database: only SQLite and PostgreSQL")


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise InvalidInput("the SQLite database must be a file to back it up or restore it")
    return Path(url.database)


def _snapshot_sqlite(path: Path, out: Path) -> None:
    """Copy the live database with SQLite's online backup API, in one step: one read transaction."""
    if not path.is_file():
        raise NotFound(f"no SQLite database at {str(path)!r}")
    _write_private(out, b"")
    with closing(sqlite3.connect(path, timeout=30)) as live, closing(sqlite3.connect(out)) as copy:
        live.backup(copy)


def _referenced_keys_in_file(db_file: Path) -> set[str]:
    engine = sa.create_engine(f"sqlite:///{db_file}")
    try:
        with engine.connect() as conn:
            return _referenced_keys(conn)
    finally:
        engine.dispose()


def _referenced_keys(conn: Connection) -> set[str]:
    """Every artifact key the metadata refers to: dataset files and model version files."""
    keys = set(conn.execute(sa.select(DatasetRow.artifact_key)).scalars())
    for prefix, files in conn.execute(sa.select(ModelVersionRow.artifact_prefix, ModelVersionRow.files)):
        keys.update(prefix + name for name in files)
    return keys


def _snapshot_postgres(url: URL, out: Path) -> set[str]:
    """``pg_dump`` of an exported snapshot; the artifact references are read in that same snapshot."""
    engine = sa.create_engine(url, isolation_level="REPEATABLE READ")
    try:
        with engine.connect() as conn, conn.begin():
            snapshot = conn.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()
            referenced = _referenced_keys(conn)
            _write_private(out, b"")
            _pg_tool("pg_dump", url, "--format=custom", f"--snapshot={snapshot}", f"--file={out}")
    finally:
        engine.dispose()
    return referenced


def _restore_sqlite(db_file: Path, target: Path, force: bool) -> None:
    if force:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private(target, b"")
    with closing(sqlite3.connect(db_file)) as saved, closing(sqlite3.connect(target)) as live:
        saved.backup(live)


def _restore_postgres(db_file: Path, url: URL, force: bool) -> None:
    clean = ["--clean", "--if-exists"] if force else []
    _pg_tool("pg_restore", url, "--no-owner", "--single-transaction", "--exit-on-error", *clean, str(db_file))


def _pg_tool(tool: str, url: URL, *args: str) -> None:
    """Run ``pg_dump``/``pg_restore`` on ``url``; the password travels in the environment."""
    exe = shutil.which(tool)
    if exe is None:
        raise StorageError(f"{tool} is not on PATH: install the PostgreSQL client tools (postgresql-client)")
    dsn = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    env = {**os.environ, **({"PGPASSWORD": str(url.password)} if url.password else {})}
    done = subprocess.run(
        [exe, f"--dbname={dsn}", *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise StorageError(f"{tool} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")


def _require_empty(url: URL, kind: DatabaseKind, store: ArtifactStore) -> None:
    if kind == "sqlite":
        path = _sqlite_path(url)
        tables = _table_names(url) if path.exists() else []
    else:
        tables = _table_names(url)
    if tables:
        raise Conflict(f"the target database already has tables ({len(tables)}); pass --force to replace it")
    if store.list():
        raise Conflict("the target artifact store is not empty; pass --force to replace its contents")


def _table_names(url: URL) -> list[str]:
    engine = sa.create_engine(url)
    try:
        return sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


# --- artifacts


def _copy_artifacts(store: ArtifactStore, root: Path) -> list[ArtifactEntry]:
    """Copy every object as stored (verified by the store on the way); skip ones deleted meanwhile."""
    _mkdir_private(root)
    entries = []
    for key in store.list():
        dest = root / key
        _mkdirs_private(root, dest.parent)
        try:
            digest = store.download(key, dest)
        except NotFound:
            continue
        entries.append(ArtifactEntry(key, digest.sha256, digest.size, _key_id(key, dest)))
    return entries


def _key_id(key: str, path: Path) -> str | None:
    with path.open("rb") as f:
        try:
            header = parse_header(key, f.read(HEADER_SIZE))
        except PlatformError:
            return None
    return header.key_id.hex() if header else None


def _restore_artifact(root: Path, store: ArtifactStore, entry: ArtifactEntry) -> None:
    path = root / validate_key(entry.key)
    if path.is_symlink() or not path.resolve().is_relative_to(root.resolve()) or not path.is_file():
        raise InvalidInput(f"the backup has no regular file for artifact {entry.key!r}")
    with path.open("rb") as f:
        digest = store.put(entry.key, f)
    if (digest.sha256, digest.size) != (entry.sha256, entry.size):
        store.delete(entry.key)
        raise ArtifactCorrupted(f"artifact {entry.key!r} in the backup does not match its manifest")


# --- files


def _read_manifest(src: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((src / MANIFEST).read_bytes())
    except FileNotFoundError as e:
        raise NotFound(f"{str(src)!r} is not a modelhost backup: it has no {MANIFEST}") from e
    except (OSError, ValueError) as e:
        raise InvalidInput(f"the manifest of backup {str(src)!r} is unreadable: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidInput(
            f"backup {str(src)!r} has format {manifest.get('format')!r}; this modelhost reads {FORMAT}"
        )
    if manifest.get("database") not in DB_FILES or manifest.get("database_file") not in DB_FILES.values():
        raise InvalidInput(f"the manifest of backup {str(src)!r} names no known database")
    for entry in manifest.get("artifacts", []):
        validate_key(entry.get("key"))
        if not _SHA256.fullmatch(str(entry.get("sha256"))) or not isinstance(entry.get("size"), int):
            raise InvalidInput(f"the manifest entry of artifact {entry.get('key')!r} is malformed")
    manifest.setdefault("key_ids", [])
    return manifest


@contextmanager
def _new_folder(path: Path) -> Iterator[Path]:
    """``path`` created (0700) for a backup, or an existing empty folder; removed again on failure."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise AlreadyExists(f"{str(path)!r} exists and is not an empty folder; choose a new path")
    _mkdir_private(path)
    try:
        yield path
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def _mkdir_private(path: Path) -> None:
    with suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=True)
    path.chmod(0o700)


def _mkdirs_private(root: Path, folder: Path) -> None:
    current = root
    for part in folder.relative_to(root).parts:
        current = current / part
        with suppress(FileExistsError):
            current.mkdir(mode=0o700)


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist) with mode 0600 and write ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
