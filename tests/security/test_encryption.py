"""Encryption at rest: the encrypted store on local files and S3 (moto's real server), what
lies on disk, tampering, wrong keys, key settings, and rotation object by object.

The server-level checks (an upload through HTTP, rotation under load) are in
``test_key_rotation.py``.
"""

from __future__ import annotations

import hashlib
import os
import stat
import uuid
from pathlib import Path

import boto3
import pytest
from pydantic import SecretStr

from modelhost.artifacts import open_store
from modelhost.artifacts.base import CHUNK_SIZE, ArtifactStore
from modelhost.artifacts.crypto import HEADER_SIZE, MAGIC, SEALED_CHUNK
from modelhost.artifacts.encrypted import EncryptedArtifactStore, Rewrite
from modelhost.artifacts.keyring import EncryptionKey, Keyring, generate_key, parse_key
from modelhost.artifacts.local import LocalArtifactStore
from modelhost.artifacts.rotation import KeyCount, census, rotate
from modelhost.artifacts.s3 import S3ArtifactStore
from modelhost.config import Settings
from modelhost.errors import ArtifactCorrupted, InvalidInput, StorageError
from tests.conftest import S3_CREDENTIALS

# The whole contract suite again, on the encrypted store over both backends (its `store` fixture
# is this module's). Tampering is tested below, where the ciphertext can be changed knowingly.
from tests.contract.test_artifacts import (  # noqa: F401
    test_bad_key_is_invalid_input,
    test_bad_prefix_is_invalid_input,
    test_delete_is_idempotent,
    test_delete_prefix_counts_removed_objects,
    test_download_writes_verified_file_and_leaves_none_on_mismatch,
    test_empty_object,
    test_list_is_sorted_filtered_by_prefix_and_hides_sidecars,
    test_malformed_expected_sha256_is_invalid_input,
    test_missing_key_raises_not_found,
    test_overwrite_replaces_content,
    test_put_accepts_an_unseekable_stream,
    test_round_trip_bytes,
    test_round_trip_file_like_streams_big_object,
    test_wrong_expected_sha256_raises_integrity_error,
)

KEY_A, KEY_B, KEY_C = (parse_key(generate_key(), "test key") for _ in range(3))
MARKER = b"MARKER-7f3c9e-plaintext-must-never-be-stored"


@pytest.fixture
def s3_client(moto_endpoint):
    return boto3.client("s3", endpoint_url=moto_endpoint, **S3_CREDENTIALS)


@pytest.fixture(params=["local", "s3"])
def inner(request, tmp_path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    client = request.getfixturevalue("s3_client")
    bucket = f"enc-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    return S3ArtifactStore(bucket, "team/artifacts", client=client)


@pytest.fixture
def store(inner) -> EncryptedArtifactStore:
    return EncryptedArtifactStore(inner, Keyring(KEY_A))


def with_keys(
    inner: ArtifactStore, current: EncryptionKey | None, *old: EncryptionKey
) -> EncryptedArtifactStore:
    return EncryptedArtifactStore(inner, Keyring(current, old))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_bytes(inner: ArtifactStore, key: str) -> bytes:
    return inner.get(key)  # the inner store: the bytes exactly as they lie at rest


def payload(size: int) -> bytes:
    """``size`` bytes with the marker repeated through them (and at both ends)."""
    body = (MARKER + os.urandom(64)) * (size // (len(MARKER) + 64) + 1)
    return (MARKER + body)[: size - len(MARKER)] + MARKER if size >= 2 * len(MARKER) else MARKER


# --- what lies at rest


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE + 7])
def test_round_trip_across_chunk_boundaries(store, tmp_path, size):
    data = os.urandom(size)
    digest = store.put("obj", data)
    assert (digest.sha256, digest.size) == (sha(data), size)  # the platform records the plaintext's
    assert store.get("obj", expected_sha256=sha(data)) == data
    assert store.download("obj", tmp_path / "out.bin") == digest
    assert (tmp_path / "out.bin").read_bytes() == data
    assert store.digest("obj") == digest
    at_rest = stored_bytes(store.inner, "obj")
    chunks = max(1, -(-size // CHUNK_SIZE))
    assert len(at_rest) == HEADER_SIZE + size + 16 * chunks
    assert at_rest.startswith(MAGIC)


def test_local_files_hold_no_plaintext(tmp_path):
    root = tmp_path / "artifacts"
    store = EncryptedArtifactStore(LocalArtifactStore(root), Keyring(KEY_A))
    store.put("datasets/x/data.csv", payload(3 * CHUNK_SIZE + 5))
    store.put("models/m/1/modelhost.json", b'{"note": "' + MARKER + b'"}')
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) == 4  # two objects, two digest sidecars
    for p in files:
        assert MARKER not in p.read_bytes(), p
    for p in files:
        if not p.name.endswith(".sha256.json"):
            assert p.read_bytes().startswith(MAGIC)
            assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_s3_objects_hold_no_plaintext(s3_client):
    bucket = f"enc-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=bucket)
    store = EncryptedArtifactStore(S3ArtifactStore(bucket, "p", client=s3_client), Keyring(KEY_A))
    data = payload(CHUNK_SIZE + 100)
    store.put("datasets/x/data.csv", data)
    raw = s3_client.get_object(Bucket=bucket, Key="p/datasets/x/data.csv")
    body = raw["Body"].read()
    assert MARKER not in body and body.startswith(MAGIC)
    assert raw["Metadata"]["sha256"] == sha(body)  # S3 records the ciphertext's; the platform the plaintext's
    assert store.get("datasets/x/data.csv") == data


def test_same_plaintext_encrypts_differently_each_time(store):
    store.put("a", b"same bytes")
    store.put("b", b"same bytes")
    assert stored_bytes(store.inner, "a")[HEADER_SIZE:] != stored_bytes(store.inner, "b")[HEADER_SIZE:]


# --- tampering


def rewrite_at_rest(store: EncryptedArtifactStore, key: str, change) -> None:
    """Change the stored bytes *and* their recorded digest, as someone with write access to
    the disk or bucket could: only the encryption can notice."""
    store.inner.put(key, change(bytearray(stored_bytes(store.inner, key))))


def flip(offset: int):
    def change(b: bytearray) -> bytes:
        b[offset] ^= 0x01
        return bytes(b)

    return change


DATA = os.urandom(2 * CHUNK_SIZE + 1000)  # three chunks, the last one short
FIRST_CHUNK, LAST_CHUNK = HEADER_SIZE, HEADER_SIZE + 2 * SEALED_CHUNK
CHANGES = {
    "salt": flip(HEADER_SIZE - 1),
    "first chunk body": flip(FIRST_CHUNK + 10),
    "first chunk tag": flip(FIRST_CHUNK + SEALED_CHUNK - 1),
    "last byte": flip(-1),
    "format version": flip(len(MAGIC)),
    "truncated at a chunk boundary": lambda b: bytes(b[:LAST_CHUNK]),
    "final chunk dropped mid-way": lambda b: bytes(b[: LAST_CHUNK + 500]),
    "chunks swapped": lambda b: bytes(
        b[:FIRST_CHUNK]
        + b[FIRST_CHUNK + SEALED_CHUNK : LAST_CHUNK]
        + b[FIRST_CHUNK : FIRST_CHUNK + SEALED_CHUNK]
        + b[LAST_CHUNK:]
    ),
    "chunk appended": lambda b: bytes(b + b[FIRST_CHUNK : FIRST_CHUNK + SEALED_CHUNK]),
    "header only": lambda b: bytes(b[:HEADER_SIZE]),
}


@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
def test_any_change_at_rest_is_detected_on_read(store, tmp_path, change):
    store.put("w.bin", DATA)
    rewrite_at_rest(store, "w.bin", CHANGES[change])
    expected = StorageError if change == "format version" else ArtifactCorrupted
    with pytest.raises(expected, match=r"'w\.bin'") as info:
        store.get("w.bin")
    assert info.value.status >= 500  # the server's fault, not the client's: a clean 5xx
    with pytest.raises(expected, match=r"'w\.bin'"):
        store.download("w.bin", tmp_path / "dl" / "w.bin")
    assert list((tmp_path / "dl").iterdir()) == []  # no file, no temp file


def test_object_copied_under_another_key_is_detected(store):
    store.put("models/good/weights", b"trusted weights")
    store.put("models/evil/weights", b"attacker weights")
    store.inner.put("models/good/weights", stored_bytes(store.inner, "models/evil/weights"))
    with pytest.raises(ArtifactCorrupted, match="models/good/weights"):
        store.get("models/good/weights")


def test_change_without_fixing_the_recorded_digest_is_detected(store):
    store.put("w.bin", b"trusted weights")
    tampered = bytearray(stored_bytes(store.inner, "w.bin"))
    tampered[HEADER_SIZE] ^= 1
    if isinstance(store.inner, LocalArtifactStore):
        (store.inner.root / "w.bin").write_bytes(bytes(tampered))
    else:
        assert isinstance(store.inner, S3ArtifactStore)
        stale = store.inner.digest("w.bin").sha256
        store.inner._s3.put_object(
            Bucket=store.inner.bucket, Key=store.inner.prefix + "w.bin", Body=bytes(tampered),
            Metadata={"sha256": stale},
        )  # fmt: skip
    with pytest.raises(ArtifactCorrupted, match=r"'w\.bin'"):
        store.get("w.bin")


# --- keys


def test_wrong_key_is_a_clear_error_without_key_material(store):
    store.put("d/data.csv", b"secret rows")
    other = with_keys(store.inner, KEY_B)
    with pytest.raises(StorageError, match=KEY_A.hex_id) as info:
        other.get("d/data.csv")
    message = info.value.message
    assert "not configured" in message and "MODELHOST_ENCRYPTION_OLD_KEYS" in message
    for secret in (KEY_A.secret.hex(), KEY_B.secret.hex()):
        assert secret not in message
    assert KEY_B.hex_id not in repr(KEY_B.secret) and KEY_B.secret.hex() not in repr(KEY_B)


def test_plaintext_objects_written_before_encryption_still_read(inner):
    inner.put("old/data.csv", MARKER)
    store = with_keys(inner, KEY_A)
    assert store.get("old/data.csv", expected_sha256=sha(MARKER)) == MARKER
    assert store.digest("old/data.csv").sha256 == sha(MARKER)
    assert store.key_id_of("old/data.csv") is None


def keys_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "keys"
    path.write_text(text)
    path.chmod(mode)
    return path


def b64(key: EncryptionKey) -> str:
    import base64

    return base64.urlsafe_b64encode(key.secret).decode()


def test_key_settings(tmp_path):
    assert open_store(Settings(home=tmp_path)).__class__ is LocalArtifactStore  # no key: no wrapper
    enc = open_store(Settings(home=tmp_path, encryption_key=SecretStr(b64(KEY_A))))
    assert isinstance(enc, EncryptedArtifactStore) and enc.keyring.current == KEY_A
    # a key file: first line current, the rest old; comments and blank lines skipped
    path = keys_file(tmp_path, f"# rotated 2026-11\n{b64(KEY_B)}\n\n{b64(KEY_A)}\n")
    enc = open_store(Settings(home=tmp_path, encryption_key_file=path))
    assert isinstance(enc, EncryptedArtifactStore)
    assert (enc.keyring.current, enc.keyring.old) == (KEY_B, (KEY_A,))
    # old keys alone: reads both forms, writes in the clear (how encryption is turned off)
    old = SecretStr(f"{b64(KEY_A)}, {b64(KEY_C)}")
    enc = open_store(Settings(home=tmp_path, encryption_old_keys=old))
    assert isinstance(enc, EncryptedArtifactStore)
    assert (enc.keyring.current, enc.keyring.old) == (None, (KEY_A, KEY_C))
    standard_alphabet = KEY_A.secret.hex()  # hex is valid base64 too, but decodes to 48 bytes
    with pytest.raises(InvalidInput, match=r"MODELHOST_ENCRYPTION_KEY decodes to 48 bytes; .* exactly 32"):
        open_store(Settings(home=tmp_path, encryption_key=SecretStr(standard_alphabet)))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"encryption_key": "not base64!"}, "MODELHOST_ENCRYPTION_KEY is not valid base64"),
        ({"encryption_key": "c2hvcnQga2V5"}, "decodes to 9 bytes; AES-256-GCM needs exactly 32"),
        (
            {"encryption_old_keys": "c2hvcnQga2V5"},
            "key 1 of MODELHOST_ENCRYPTION_OLD_KEYS decodes to 9 bytes",
        ),
        ({"encryption_key_file": "/nonexistent/keys"}, "does not exist"),
    ],
)
def test_bad_key_settings_are_refused_by_name(tmp_path, settings, message):
    with pytest.raises(InvalidInput, match=message) as info:
        open_store(Settings(home=tmp_path, **settings))
    assert "c2hvcnQga2V5" not in info.value.message  # the key itself is never echoed


def test_key_file_readable_by_others_or_holding_no_key_is_refused(tmp_path):
    path = keys_file(tmp_path, b64(KEY_A) + "\n", mode=0o644)
    with pytest.raises(InvalidInput, match=r"readable by group or others \(mode 0644\); run: chmod 600"):
        open_store(Settings(home=tmp_path, encryption_key_file=path))
    path = keys_file(tmp_path, "# nothing yet\n")
    with pytest.raises(InvalidInput, match="holds no key"):
        open_store(Settings(home=tmp_path, encryption_key_file=path))
    with pytest.raises(InvalidInput, match="not both"):
        open_store(Settings(home=tmp_path, encryption_key=SecretStr(b64(KEY_A)), encryption_key_file=path))


# --- rotation


def test_rotation_moves_every_object_to_the_current_key(inner):
    old = with_keys(inner, KEY_A)
    data = {f"datasets/{i}/data.csv": os.urandom(1000 * i) for i in range(5)}
    for key, value in data.items():
        old.put(key, value)
    inner.put("legacy/plain.txt", MARKER)  # from before encryption was turned on
    data["legacy/plain.txt"] = MARKER
    both = with_keys(inner, KEY_B, KEY_A)
    both.put("new/written-after-the-switch", b"new")
    data["new/written-after-the-switch"] = b"new"
    assert census(both) == [KeyCount(KEY_B.hex_id, "current", 1), KeyCount(KEY_A.hex_id, "old", 5),
                            KeyCount(None, "clear", 1)]  # fmt: skip
    result = rotate(both)
    assert result.counts == {"rewritten": 6, "current": 1, "changed": 0} and result.failed == {}
    assert census(both) == [KeyCount(KEY_B.hex_id, "current", 7)]
    only_new = with_keys(inner, KEY_B)  # the old key can go
    assert {k: only_new.get(k) for k in only_new.list()} == data
    assert MARKER not in stored_bytes(inner, "legacy/plain.txt")
    assert rotate(both).counts == {"rewritten": 0, "current": 7, "changed": 0}  # idempotent


def test_rotation_without_a_current_key_decrypts_everything(inner):
    with_keys(inner, KEY_A).put("a", b"alpha")
    off = with_keys(inner, None, KEY_A)
    assert rotate(off).counts["rewritten"] == 1
    assert stored_bytes(inner, "a") == b"alpha"
    assert census(inner) == [KeyCount(None, "clear", 1)]


def test_rotation_reports_what_it_cannot_read_and_goes_on(inner):
    with_keys(inner, KEY_C).put("lost-key", b"x")
    store = with_keys(inner, KEY_B, KEY_A)
    with_keys(inner, KEY_A).put("ok", b"y")
    with_keys(inner, KEY_A).put("corrupt", b"z")
    rewrite_at_rest(store, "corrupt", flip(-1))  # under the old key: rotation must read it
    result = rotate(store)
    assert result.counts == {"rewritten": 1, "current": 0, "changed": 0, "failed": 2}
    assert KEY_C.hex_id in result.failed["lost-key"] and "authentication" in result.failed["corrupt"]
    assert census(store) == [KeyCount(KEY_B.hex_id, "current", 1), KeyCount(KEY_A.hex_id, "old", 1),
                             KeyCount(KEY_C.hex_id, "unknown", 1)]  # fmt: skip
    with pytest.raises(InvalidInput, match="no encryption key is configured"):
        rotate(inner)


class RacingStore(LocalArtifactStore):
    """A real local store where the platform writes ``key`` again just as rotation checks it."""

    def __init__(self, root: Path, racer: EncryptedArtifactStore | None = None) -> None:
        super().__init__(root)
        self.racer = racer

    def digest(self, key: str):
        if self.racer is not None:
            racer, self.racer = self.racer, None
            racer.put(key, b"written by the platform during rotation")
        return super().digest(key)


def test_rotation_never_overwrites_an_object_written_meanwhile(tmp_path):
    with_keys(LocalArtifactStore(tmp_path / "a"), KEY_A).put("ckpt", b"old checkpoint")
    inner = RacingStore(tmp_path / "a")
    store = with_keys(inner, KEY_B, KEY_A)
    inner.racer = store  # the server, already on the new key
    assert store.reencrypt("ckpt") is Rewrite.CHANGED
    assert store.get("ckpt") == b"written by the platform during rotation"
    assert store.key_id_of("ckpt") == KEY_B.id
