"""One contract suite for every ArtifactStore backend: local files and S3 (moto's real server)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import threading
import uuid

import boto3
import pytest

from modelhost.artifacts import ArtifactStore, Digest, open_artifacts, validate_key
from modelhost.artifacts.local import LocalArtifactStore
from modelhost.artifacts.s3 import S3ArtifactStore
from modelhost.errors import ArtifactCorrupted, InvalidInput, NotFound, StorageError
from tests.conftest import S3_CREDENTIALS

BIG = os.urandom(3 * 1024 * 1024 + 12345)  # > 3 MiB and not a whole number of chunks


@pytest.fixture
def s3_client(moto_endpoint):
    return boto3.client("s3", endpoint_url=moto_endpoint, **S3_CREDENTIALS)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    client = request.getfixturevalue("s3_client")  # only S3 cases start the moto server
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    return S3ArtifactStore(bucket, "team/artifacts", client=client)


@pytest.fixture
def local_store(tmp_path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def named(key: str) -> str:
    """A pattern for an error message that names ``key`` as its repr."""
    return re.escape(repr(key))


def tamper(store: ArtifactStore, key: str, data: bytes) -> None:
    """Replace the stored bytes behind the store's back, leaving the recorded digest stale."""
    if isinstance(store, LocalArtifactStore):
        (store.root / key).write_bytes(data)
    else:
        assert isinstance(store, S3ArtifactStore)
        stale = store.digest(key).sha256
        store._s3.put_object(
            Bucket=store.bucket, Key=store.prefix + key, Body=data, Metadata={"sha256": stale}
        )


class FailingReader(io.RawIOBase):
    """A client upload that dies after its first chunk."""

    def __init__(self) -> None:
        self.calls = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("client went away")
        return b"x" * 1024


def test_round_trip_bytes(store):
    digest = store.put("models/digits/v1/weights.bin", b"hello")
    assert digest == Digest(sha256=sha(b"hello"), size=5)
    assert store.get("models/digits/v1/weights.bin") == b"hello"
    assert store.digest("models/digits/v1/weights.bin") == digest
    assert store.exists("models/digits/v1/weights.bin") is True


def test_round_trip_file_like_streams_big_object(store, tmp_path):
    digest = store.put("big.bin", io.BytesIO(BIG))
    assert digest == Digest(sha256=sha(BIG), size=len(BIG))
    assert store.get("big.bin", expected_sha256=sha(BIG)) == BIG
    assert store.download("big.bin", tmp_path / "out" / "big.bin") == digest
    assert (tmp_path / "out" / "big.bin").read_bytes() == BIG


def test_put_accepts_an_unseekable_stream(store):
    reader = io.BufferedReader(io.BytesIO(BIG))
    reader.seekable = lambda: False  # a socket-like upload
    assert store.put("stream.bin", reader) == Digest(sha256=sha(BIG), size=len(BIG))
    assert store.get("stream.bin") == BIG


def test_empty_object(store):
    assert store.put("empty", b"") == Digest(sha256=sha(b""), size=0)
    assert store.get("empty") == b""


def test_overwrite_replaces_content(store):
    store.put("a.txt", b"old")
    digest = store.put("a.txt", b"new content")
    assert store.get("a.txt") == b"new content"
    assert store.digest("a.txt") == digest == Digest(sha(b"new content"), 11)
    assert store.list() == ["a.txt"]


def test_wrong_expected_sha256_raises_integrity_error(store, tmp_path):
    store.put("a.txt", b"payload")
    with pytest.raises(ArtifactCorrupted, match=named("a.txt")) as info:
        store.get("a.txt", expected_sha256=sha(b"other"))
    assert "payload" not in str(info.value)
    assert store.get("a.txt", expected_sha256=sha(b"payload").upper()) == b"payload"


def test_malformed_expected_sha256_is_invalid_input(store):
    store.put("a.txt", b"payload")
    with pytest.raises(InvalidInput, match="expected_sha256"):
        store.get("a.txt", expected_sha256="abc")


def test_tampered_bytes_raise_integrity_error(store, tmp_path):
    store.put("w.bin", b"trusted weights")
    tamper(store, "w.bin", b"evil weights!!!")
    with pytest.raises(ArtifactCorrupted, match=named("w.bin")) as info:
        store.get("w.bin")
    assert "evil" not in str(info.value)
    with pytest.raises(ArtifactCorrupted, match=named("w.bin")):
        store.download("w.bin", tmp_path / "w.bin")
    assert not (tmp_path / "w.bin").exists()


def test_missing_key_raises_not_found(store, tmp_path):
    store.put("a/b", b"x")
    for key in ("nope", "a"):  # "a" is only a prefix, not an object
        with pytest.raises(NotFound, match=named(key)):
            store.get(key)
        with pytest.raises(NotFound, match=named(key)):
            store.digest(key)
        with pytest.raises(NotFound, match=named(key)):
            store.download(key, tmp_path / "out")
        assert store.exists(key) is False
    assert not (tmp_path / "out").exists()


def test_list_is_sorted_filtered_by_prefix_and_hides_sidecars(store):
    for key in ("m/2/w", "m/1/w", "m/1/config.json", "m10/w", "other"):
        store.put(key, key.encode())
    assert store.list() == ["m/1/config.json", "m/1/w", "m/2/w", "m10/w", "other"]
    assert store.list("m/") == ["m/1/config.json", "m/1/w", "m/2/w"]
    assert store.list("m/1/") == ["m/1/config.json", "m/1/w"]
    assert store.list("absent/") == []


@pytest.mark.parametrize("prefix", ["m", "/m/", "../", "m//", "m/../"])
def test_bad_prefix_is_invalid_input(store, prefix):
    with pytest.raises(InvalidInput, match=named(prefix)):
        store.list(prefix)
    with pytest.raises(InvalidInput, match=named(prefix)):
        store.delete_prefix(prefix)


def test_delete_is_idempotent(store):
    store.put("a", b"1")
    store.put("b", b"2")
    store.delete("a")
    store.delete("a")
    store.delete("never/existed")
    assert store.exists("a") is False
    assert store.list() == ["b"]
    with pytest.raises(NotFound):
        store.get("a")


def test_delete_prefix_counts_removed_objects(store):
    for key in ("run/1/a", "run/1/b", "run/1/sub/c", "run/2/a", "run10/a"):
        store.put(key, b"x")
    assert store.delete_prefix("run/1/") == 3
    assert store.list() == ["run/2/a", "run10/a"]
    assert store.delete_prefix("run/1/") == 0
    store.put("run/1", b"now a plain object")  # the name is free again
    assert store.delete_prefix("") == 3
    assert store.list() == []


def test_download_writes_verified_file_and_leaves_none_on_mismatch(store, tmp_path):
    store.put("w.bin", b"weights")
    dest = tmp_path / "dl" / "w.bin"
    assert store.download("w.bin", dest, expected_sha256=sha(b"weights")) == Digest(sha(b"weights"), 7)
    assert dest.read_bytes() == b"weights"
    bad = tmp_path / "dl" / "bad.bin"
    with pytest.raises(ArtifactCorrupted, match=named("w.bin")):
        store.download("w.bin", bad, expected_sha256=sha(b"other"))
    assert sorted(p.name for p in dest.parent.iterdir()) == ["w.bin"]  # no dest, no temp file


BAD_KEYS = ["../x", "a/../b", "/abs", "a//b", "a\\b", "", ".", "..", "a/./b", "x\x00y", "%2e%2e/x",
            "a/", ".hidden", "a b", "x" * 129, "w.sha256.json", "ünïcode"]  # fmt: skip


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_key_is_invalid_input(store, key, tmp_path):
    name = named(key)
    with pytest.raises(InvalidInput, match=name):
        validate_key(key)
    with pytest.raises(InvalidInput, match=name):
        store.put(key, b"x")
    with pytest.raises(InvalidInput, match=name):
        store.get(key)
    with pytest.raises(InvalidInput, match=name):
        store.download(key, tmp_path / "out")
    for method in (store.digest, store.exists, store.delete):
        with pytest.raises(InvalidInput, match=name):
            method(key)
    assert store.list() == []


@pytest.mark.parametrize("key", ["a", "A-1_b.c", "models/digits/v1/model.safetensors", "x" * 128])
def test_good_key_is_accepted(key):
    assert validate_key(key) == key


def test_local_symlink_escaping_root_is_refused(local_store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (local_store.root / "evil").symlink_to(outside)
    (local_store.root / "link").symlink_to(outside / "secret")
    for key in ("evil/secret", "link"):
        with pytest.raises(StorageError, match=named(key)):
            local_store.get(key)
        with pytest.raises(StorageError, match=named(key)):
            local_store.put(key, b"overwritten")
    assert (outside / "secret").read_bytes() == b"secret"
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert local_store.list() == []


def test_local_failed_put_keeps_old_content_and_no_temp_files(local_store):
    local_store.put("m/w.bin", b"old")
    reader = FailingReader()
    with pytest.raises(RuntimeError, match="client went away"):
        local_store.put("m/w.bin", reader)
    assert reader.calls == 2  # it did write a first chunk before failing
    assert local_store.get("m/w.bin") == b"old"
    assert [p.name for p in local_store.root.rglob(".tmp-*")] == []


def test_local_crash_between_renames_is_integrity_error(local_store):
    local_store.put("w.bin", b"old")
    (local_store.root / "w.bin").write_bytes(b"new")  # data renamed, sidecar not yet
    with pytest.raises(ArtifactCorrupted, match=named("w.bin")):
        local_store.get("w.bin")
    (local_store.root / "w.bin.sha256.json").unlink()  # a first put that crashed the same way
    with pytest.raises(ArtifactCorrupted, match="no recorded digest"):
        local_store.get("w.bin")


def test_local_read_during_a_put_between_its_renames_waits_for_the_digest(local_store):
    local_store.put("w.bin", b"old")
    staged = LocalArtifactStore(local_store.root.parent / "staging")
    staged.put("w.bin", b"new")  # the new object's data and sidecar, as put writes them
    os.replace(staged.root / "w.bin", local_store.root / "w.bin")  # put's first rename ...
    later = threading.Timer(  # ... and its second, a moment after a reader saw the new bytes
        0.05, os.replace, (staged.root / "w.bin.sha256.json", local_store.root / "w.bin.sha256.json")
    )
    later.start()
    try:
        assert local_store.get("w.bin") == b"new"
    finally:
        later.join()


def test_local_file_modes(tmp_path):
    store = LocalArtifactStore(tmp_path / "new" / "root")
    store.put("m/1/w.bin", b"x")
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(store.root) == 0o700
    assert mode(store.root / "m") == mode(store.root / "m" / "1") == 0o700
    assert mode(store.root / "m/1/w.bin") == mode(store.root / "m/1/w.bin.sha256.json") == 0o600


def test_open_artifacts_picks_backend(tmp_path, monkeypatch, moto_endpoint):
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):  # never read ~/.aws
        monkeypatch.setenv(name, str(tmp_path / "absent"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    local = open_artifacts(f"file://{tmp_path}/arts")
    assert isinstance(local, LocalArtifactStore)
    assert local.root == (tmp_path / "arts").resolve()
    s3 = open_artifacts("s3://my-bucket/team/arts/", s3_endpoint_url=moto_endpoint)
    assert isinstance(s3, S3ArtifactStore)
    assert (s3.bucket, s3.prefix) == ("my-bucket", "team/arts/")
    s3._s3.create_bucket(Bucket="my-bucket")
    assert s3.put("k", b"v") == Digest(sha(b"v"), 1)
    assert s3.list() == ["k"]


@pytest.mark.parametrize(
    "url",
    [
        "http://x",
        "file://relative/path",
        "s3://",
        "s3://Bad_Bucket/x",
        "s3://bucket/../x",
        "s3://bucket/a//b",
        "ftp://h/p",
        "",
    ],
)
def test_open_artifacts_rejects_other_urls(url):
    with pytest.raises(InvalidInput):
        open_artifacts(url)
