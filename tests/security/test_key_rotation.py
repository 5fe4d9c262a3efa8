"""Encryption at rest on the real server: nothing readable on disk, tampering answered with a
clean 500, and key rotation while the server serves, trains and is read, without one failure."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from modelhost.artifacts.crypto import MAGIC
from modelhost.artifacts.encrypted import EncryptedArtifactStore
from modelhost.artifacts.keyring import Keyring, generate_key, parse_key
from modelhost.artifacts.local import LocalArtifactStore
from tests.e2e.flows import MARKER_CSV, build_platform, cli, client, predict, train, wait_for_run
from tests.servers import ADMIN_KEY, start_server

pytestmark = pytest.mark.slow
KEY_A, KEY_B, KEY_C = generate_key(), generate_key(), generate_key()
EXTRA_DATASETS = 24  # enough objects that the rotation overlaps the traffic


def key_id(key: str) -> str:
    return parse_key(key, "test key").hex_id


def data_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".sha256.json")]


def test_server_encrypts_at_rest_detects_tampering_and_rotates_without_a_failed_request(tmp_path: Path):
    home, artifacts = tmp_path / "home", tmp_path / "home" / "artifacts"
    raw = LocalArtifactStore(artifacts)  # the bytes as they lie on disk, digests kept consistent
    first = start_server(home, MODELHOST_ENCRYPTION_KEY=KEY_A)
    try:
        with client(first, ADMIN_KEY) as http:
            assert http.post("/api/v1/datasets/samples/iris", json={}).status_code == 201
            r = http.post("/api/v1/datasets", data={"name": "notes"}, files={"file": ("n.csv", MARKER_CSV)})
            assert r.status_code == 201, r.text
            for i in range(EXTRA_DATASETS):
                assert (
                    http.post("/api/v1/datasets/samples/iris", json={"name": f"iris-{i}"}).status_code == 201
                )
            train(http, dataset="iris", epochs=40, seed=3)

            # at rest: every object encrypted, the marker nowhere
            files = data_files(artifacts)
            assert len(files) >= EXTRA_DATASETS + 4
            for p in files:
                data = p.read_bytes()
                assert data.startswith(MAGIC) and b"MARKER-5b1e" not in data, p

            # one byte changed (and the digest beside it fixed, as an intruder would): a clean 500
            (weights,) = [k for k in raw.list("models/") if k.endswith("weights.safetensors")]
            original = raw.get(weights)
            raw.put(weights, original[:-1] + bytes([original[-1] ^ 1]))
            r = http.put("/api/v1/deployments/iris", json={"model": "iris"})
            assert r.status_code == 500, r.text
            error = r.json()["error"]
            assert error["type"] == "artifact_corrupted" and weights in error["message"]
            raw.put(weights, original)
            r = http.put("/api/v1/deployments/iris", json={"model": "iris"})
            assert r.status_code == 201 and r.json()["state"] == "ready", r.text
            predictions = predict(http)
    finally:
        first.stop()

    # step 1 of a rotation: the new key current, the old one kept for reading
    both = {"MODELHOST_ENCRYPTION_KEY": KEY_B, "MODELHOST_ENCRYPTION_OLD_KEYS": KEY_A}
    second = start_server(home, **both)
    reader = EncryptedArtifactStore(raw, Keyring(parse_key(KEY_B, "b"), (parse_key(KEY_A, "a"),)))
    expected = {k: hashlib.sha256(reader.get(k)).hexdigest() for k in reader.list()}
    failures: list[str] = []
    counts = {"predictions": 0, "reads": 0}
    stop = threading.Event()

    def keep_predicting() -> None:
        with client(second, ADMIN_KEY) as http:
            while not stop.is_set():
                try:
                    assert predict(http) == predictions
                    counts["predictions"] += 1
                except Exception as e:
                    failures.append(f"prediction: {e!r}")

    def keep_reading() -> None:  # another process's view: both forms must read at every moment
        while not stop.is_set():
            for key, sha in expected.items():
                try:
                    assert hashlib.sha256(reader.get(key)).hexdigest() == sha
                    counts["reads"] += 1
                except Exception as e:
                    failures.append(f"read {key}: {e!r}")

    try:
        with client(second, ADMIN_KEY) as http:
            assert predict(http) == predictions  # loaded from weights still under the old key
            threads = [threading.Thread(target=f) for f in (keep_predicting, keep_reading)]
            for t in threads:
                t.start()
            try:
                run = http.post("/api/v1/runs", json={"dataset": "iris", "epochs": 40, "seed": 4}).json()
                done = cli(second.env, "encryption", "rotate")  # step 2, while all of that goes on
                assert "0 changed" in done.stdout and f"{len(expected)} rewritten" in done.stdout, done.stdout
                after = counts["reads"]  # the readers go once more over the rotated objects
                deadline = time.monotonic() + 60
                while counts["reads"] < after + len(expected) and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                stop.set()
                for t in threads:
                    t.join()
            assert failures == [], failures[:5]
            assert counts["predictions"] > 0 and counts["reads"] > len(expected)
            wait_for_run(http, run["id"])  # trained, checkpointed and registered during the rotation
            status = json.loads(cli(second.env, "encryption", "status", "--json").stdout)
            total = len(raw.list())
            assert status == [{"key_id": key_id(KEY_B), "role": "current", "objects": total}]
    finally:
        second.stop()

    # step 3: the old key dropped; a key nobody configured reads nothing and says why
    only_c = {**second.env, "MODELHOST_ENCRYPTION_KEY": KEY_C, "MODELHOST_ENCRYPTION_OLD_KEYS": ""}
    unknown = json.loads(cli(only_c, "encryption", "status", "--json").stdout)
    assert unknown == [
        {"key_id": key_id(KEY_C), "role": "current", "objects": 0},
        {"key_id": key_id(KEY_B), "role": "unknown", "objects": total},
    ]
    third = start_server(home, MODELHOST_ENCRYPTION_KEY=KEY_B)
    try:
        with client(third, ADMIN_KEY) as http:
            assert predict(http) == predictions
            r = http.put("/api/v1/deployments/iris-v2", json={"model": "iris", "version": 2})
            assert r.status_code == 201 and r.json()["state"] == "ready", r.text
            assert len(predict(http, "iris-v2")) == 3
    finally:
        third.stop()


def write_key_file(path: Path, *keys: str) -> None:
    """Replace the key file at once, as an operator would (a private temp file renamed over it)."""
    staged = path.with_suffix(".new")
    staged.write_text("".join(k + "\n" for k in keys))
    staged.chmod(0o600)
    staged.replace(path)


def test_a_key_file_rotates_on_a_running_server_without_a_restart(tmp_path: Path) -> None:
    home, key_file = tmp_path / "home", tmp_path / "keys"
    write_key_file(key_file, KEY_A)
    raw = LocalArtifactStore(home / "artifacts")
    server = start_server(home, MODELHOST_ENCRYPTION_KEY_FILE=str(key_file))
    try:
        with client(server, ADMIN_KEY) as http:
            predictions = build_platform(http)
            reader = EncryptedArtifactStore(raw, Keyring(parse_key(KEY_B, "b"), (parse_key(KEY_A, "a"),)))
            a, b = parse_key(KEY_A, "a").id, parse_key(KEY_B, "b").id
            assert {reader.key_id_of(k) for k in raw.list()} == {a}

            write_key_file(key_file, KEY_B, KEY_A)  # step 1: the new key first, the old one after
            r = http.post("/api/v1/datasets/samples/wine", json={})
            assert r.status_code == 201, r.text
            assert b in {reader.key_id_of(k) for k in raw.list()}  # the running server writes with it at once
            done = cli(server.env, "encryption", "rotate")  # step 2, while it serves
            assert "0 changed" in done.stdout, done.stdout
            assert {reader.key_id_of(k) for k in raw.list()} == {b}

            write_key_file(key_file, KEY_B)  # step 3: the old key dropped, still no restart
            assert predict(http) == predictions
            r = http.put("/api/v1/deployments/iris-again", json={"model": "iris"})
            assert r.status_code == 201 and r.json()["state"] == "ready", r.text  # weights read under B
            assert predict(http, "iris-again") == predictions

            write_key_file(key_file, "not a key")  # a broken file: the last good keys stay in use
            r = http.put("/api/v1/deployments/iris-third", json={"model": "iris"})
            assert r.status_code == 201 and r.json()["state"] == "ready", r.text
    finally:
        server.stop()
