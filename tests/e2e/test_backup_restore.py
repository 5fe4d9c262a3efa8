"""``modelhost backup`` while the server serves, ``modelhost restore`` into a fresh home (and a
fresh PostgreSQL database), and a server started there finds everything: datasets, runs,
versions, deployments, the same artifact checksums, the same predictions."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import threading
from pathlib import Path

import pytest

from modelhost.artifacts import open_artifacts
from modelhost.artifacts.crypto import MAGIC
from modelhost.artifacts.encrypted import EncryptedArtifactStore
from modelhost.artifacts.keyring import Keyring, generate_key, parse_key
from modelhost.backup import backup, restore
from modelhost.config import Settings
from modelhost.errors import AlreadyExists, ArtifactCorrupted, InvalidInput, NotFound
from tests.conftest import fresh_postgres_db
from tests.e2e.flows import MARKER_CSV, build_platform, cli, client, predict, snapshot
from tests.servers import ADMIN_KEY, server_env, start_server

pytestmark = pytest.mark.slow
KEY = generate_key()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def backup_restore_roundtrip(tmp_path: Path, source: dict[str, str], target: dict[str, str]) -> dict:
    """Build a platform on a server with ``source`` settings, back it up under load, restore
    it with ``target`` settings, start a server there and compare. Returns the manifest."""
    server = start_server(tmp_path / "home", **source)
    failures: list[str] = []
    try:
        with client(server, ADMIN_KEY) as http:
            predictions = build_platform(http)
            before = snapshot(http)
            stop, served = threading.Event(), [0]

            def keep_predicting() -> None:  # the server is busy while the backup runs
                while not stop.is_set():
                    try:
                        assert predict(http) == predictions
                        served[0] += 1
                    except Exception as e:
                        failures.append(repr(e))

            loader = threading.Thread(target=keep_predicting)
            loader.start()
            try:
                done = cli(server.env, "backup", str(tmp_path / "backup"))
            finally:
                stop.set()
                loader.join()
            assert failures == [] and served[0] > 0
            assert "backup of" in done.stdout
    finally:
        server.stop()

    folder = tmp_path / "backup"
    assert mode(folder) == 0o700
    for p in folder.rglob("*"):
        assert mode(p) == (0o700 if p.is_dir() else 0o600), p
    manifest = json.loads((folder / "manifest.json").read_bytes())
    source_store = open_artifacts((tmp_path / "home" / "artifacts").as_uri())
    assert [a["key"] for a in manifest["artifacts"]] == source_store.list()
    for a in manifest["artifacts"]:
        stored = (folder / "artifacts" / a["key"]).read_bytes()
        assert (
            (sha(stored), len(stored))
            == (a["sha256"], a["size"])
            == tuple(vars(source_store.digest(a["key"])).values())
        )

    env = server_env(tmp_path / "home2", **target)
    cli(env, "restore", str(folder))
    again = cli(env, "restore", str(folder), check=False)  # not over a restored (non-empty) target
    assert again.returncode == 1 and "--force" in again.stderr

    restored = start_server(tmp_path / "home2", **target)
    try:
        with client(restored, ADMIN_KEY) as http:
            assert snapshot(http) == before
            assert predict(http) == predictions
    finally:
        restored.stop()
    target_store = open_artifacts((tmp_path / "home2" / "artifacts").as_uri())
    assert target_store.list() == source_store.list()
    for key in source_store.list():
        assert target_store.digest(key) == source_store.digest(key)
    return manifest


def test_backup_and_restore_on_sqlite_with_encrypted_artifacts(tmp_path: Path) -> None:
    keyed = {"MODELHOST_ENCRYPTION_KEY": KEY}
    manifest = backup_restore_roundtrip(tmp_path, keyed, keyed)
    key = parse_key(KEY, "test key")
    assert manifest["database"] == "sqlite" and manifest["key_ids"] == [key.hex_id]
    assert {a["key_id"] for a in manifest["artifacts"]} == {key.hex_id}
    backup_files = [p for p in (tmp_path / "backup" / "artifacts").rglob("*") if p.is_file()]
    assert all(p.read_bytes().startswith(MAGIC) for p in backup_files)  # kept as stored: encrypted
    assert all(b"MARKER-5b1e" not in p.read_bytes() for p in backup_files)
    # the plaintext checksums the metadata recorded hold in the restored store
    restored = EncryptedArtifactStore(
        open_artifacts((tmp_path / "home2" / "artifacts").as_uri()), Keyring(key)
    )
    notes = next(a["key"] for a in manifest["artifacts"] if a["key"].endswith(".csv") and a["size"] < 500)
    assert restored.get(notes, expected_sha256=sha(MARKER_CSV)) == MARKER_CSV


def test_backup_and_restore_on_postgresql(tmp_path: Path, postgres_admin) -> None:
    if not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        message = "pg_dump/pg_restore are not installed (apt-get install postgresql-client)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL backup test: {message}", pytrace=False)
        pytest.skip(message)
    with fresh_postgres_db(postgres_admin) as source, fresh_postgres_db(postgres_admin) as target:
        manifest = backup_restore_roundtrip(
            tmp_path, {"MODELHOST_DATABASE_URL": source}, {"MODELHOST_DATABASE_URL": target}
        )
    assert manifest["database"] == "postgresql" and manifest["key_ids"] == []
    assert (tmp_path / "backup" / "metadata.pgdump").read_bytes().startswith(b"PGDMP")
    assert not (tmp_path / "home2" / "modelhost.db").exists()


def test_backup_and_restore_refuse_what_they_cannot_do_safely(tmp_path: Path) -> None:
    from modelhost.db import Database

    settings = Settings(home=tmp_path / "home")
    settings.home.mkdir()
    Database(settings.resolved_database_url).migrate()
    open_artifacts(settings.resolved_artifacts_url).put("datasets/a/data.csv", b"x,y\n1,2\n")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("mine")
    with pytest.raises(AlreadyExists, match="not an empty folder"):
        backup(settings, tmp_path / "taken")
    assert (tmp_path / "taken" / "file").read_text() == "mine"
    done = backup(settings, tmp_path / "bk")
    assert done.artifacts == 1 and done.database == "sqlite"

    fresh = Settings(home=tmp_path / "fresh")
    with pytest.raises(NotFound, match=r"no manifest\.json"):
        restore(fresh, tmp_path)
    postgres = Settings(home=tmp_path / "pg", database_url="postgresql+psycopg://u@127.0.0.1:1/none")
    with pytest.raises(InvalidInput, match="holds a sqlite database; the target is postgresql"):
        restore(postgres, tmp_path / "bk")
    (tmp_path / "bk" / "artifacts" / "datasets" / "a" / "data.csv").write_bytes(b"x,y\n6,6\n")
    with pytest.raises(ArtifactCorrupted, match="does not match its manifest"):
        restore(fresh, tmp_path / "bk")
    assert not (fresh.home / "modelhost.db").exists()  # the metadata comes last: nothing half-restored
    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    manifest["artifacts"][0]["key"] = "../../outside"
    (tmp_path / "bk" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidInput, match="invalid artifact key"):
        restore(fresh, tmp_path / "bk", force=True)
