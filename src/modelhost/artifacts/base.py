"""The artifact store interface: blobs under safe keys, each verified by its sha256.

Every store records the sha256 and size of what it wrote at ``put`` time and checks them
on every read, so truncated, corrupted or tampered bytes surface as
:class:`~modelhost.errors.ArtifactCorrupted`, never as silently wrong data.
:func:`open_artifacts` picks the backend from a URL; nothing else branches on it.
"""

from __future__ import annotations

import abc
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import unquote, urlsplit

from modelhost.errors import ArtifactCorrupted, InvalidInput

if TYPE_CHECKING:
    from modelhost.config import Settings

CHUNK_SIZE = 1024 * 1024
"""Bytes read or written at a time: streams never hold much more than this in memory."""
SIDECAR_SUFFIX = ".sha256.json"
"""Reserved in keys: the local backend keeps each object's digest in ``<name>.sha256.json``."""
TEMP_PREFIX = ".tmp-"
"""Prefix of half-written files; no key segment can start with it."""
MAX_KEY_LENGTH = 1024  # S3's own limit on a key, prefix included

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Digest:
    """What a store recorded about one object: the hex sha256 of its bytes and their count."""

    sha256: str
    size: int


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a safe artifact key; else raise InvalidInput naming it.

    A key is '/'-separated segments, each matching ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}`` and
    not ending in ``.sha256.json``. That refuses empty keys and segments, leading or trailing
    '/', '.' and '..', backslashes, NUL, '%' and anything else that could escape a root or
    mean different things on different backends.
    """
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"invalid artifact key {key!r}: must be 1 to {MAX_KEY_LENGTH} characters")
    for segment in key.split("/"):
        if not _SEGMENT.fullmatch(segment) or segment.endswith(SIDECAR_SUFFIX):
            raise InvalidInput(
                f"invalid artifact key {key!r}: each '/'-separated segment must match "
                f"{_SEGMENT.pattern} and not end with {SIDECAR_SUFFIX!r}"
            )
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is "" or a valid key followed by '/'; else raise InvalidInput."""
    if prefix == "":
        return prefix
    if isinstance(prefix, str) and prefix.endswith("/"):
        try:
            validate_key(prefix[:-1])
        except InvalidInput:
            pass
        else:
            return prefix
    raise InvalidInput(f"invalid artifact prefix {prefix!r}: must be '' or a valid key followed by '/'")


def is_valid_key(key: str) -> bool:
    try:
        validate_key(key)
    except InvalidInput:
        return False
    return True


def normalize_sha256(expected: str | None) -> str | None:
    """Lower-case a caller's expected sha256; InvalidInput unless it is 64 hex digits."""
    if expected is None:
        return None
    if not isinstance(expected, str) or not _SHA256.fullmatch(expected.lower()):
        raise InvalidInput("expected_sha256 must be 64 hexadecimal digits")
    return expected.lower()


def verify(key: str, actual: Digest, *, recorded: Digest, expected_sha256: str | None) -> None:
    """Raise ArtifactCorrupted (naming the key, never the data) unless ``actual`` matches both digests."""
    if actual != recorded:
        raise ArtifactCorrupted(f"artifact {key!r} does not match the sha256 recorded when it was stored")
    if expected_sha256 is not None and actual.sha256 != expected_sha256:
        raise ArtifactCorrupted(f"artifact {key!r} does not match the expected sha256")


def iter_chunks(data: bytes | BinaryIO) -> Iterator[bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        yield bytes(data)
        return
    while chunk := data.read(CHUNK_SIZE):
        yield chunk


def hash_into(chunks: Iterable[bytes], sink: Callable[[bytes], object]) -> Digest:
    """Pass every chunk to ``sink`` and return the digest of all of them."""
    h, size = hashlib.sha256(), 0
    for chunk in chunks:
        h.update(chunk)
        size += len(chunk)
        sink(chunk)
    return Digest(sha256=h.hexdigest(), size=size)


def read_all(chunks: Iterable[bytes], check: Callable[[Digest], None]) -> bytes:
    """Collect the chunks, then ``check`` their digest before handing any byte back."""
    buf = bytearray()
    check(hash_into(chunks, buf.extend))
    return bytes(buf)


def write_atomic(
    path: Path, chunks: Iterable[bytes], check: Callable[[Digest], None] | None = None
) -> Digest:
    """Write ``chunks`` to ``path`` so readers see the old file or the whole new one.

    A temp file (mode 0600) in the same folder is written, fsynced and ``check``-ed, then
    renamed over ``path`` and the folder fsynced. If anything raises, the temp file is
    removed and ``path`` is untouched.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            digest = hash_into(chunks, f.write)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(digest)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return digest


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArtifactStore(abc.ABC):
    """Blobs under keys (see :func:`validate_key`), verified against the sha256 recorded at put.

    Every method validates its key or prefix first and raises InvalidInput for a bad one.
    Backend failures raise StorageError; bytes that do not match their digest, ArtifactCorrupted.
    """

    @abc.abstractmethod
    def put(self, key: str, data: bytes | BinaryIO) -> Digest:
        """Store ``data`` under ``key`` atomically; readers see the old object or the new one, never a part.

        File-like input is streamed in chunks from its current position, and the sha256 and size
        are computed while writing and recorded with the object. Returns that digest.
        An exception from ``data.read()`` propagates and leaves the old object in place.
        """

    @abc.abstractmethod
    def get(self, key: str, expected_sha256: str | None = None) -> bytes:
        """Return the bytes under ``key`` after checking them against the recorded digest.

        Raises NotFound if there is no such key, ArtifactCorrupted if the bytes do not match the
        recorded digest or ``expected_sha256`` (when given).
        """

    @abc.abstractmethod
    def download(self, key: str, dest: Path, expected_sha256: str | None = None) -> Digest:
        """Stream the object to ``dest`` atomically, verified as in :meth:`get`; return its digest.

        Writes a temp file in dest's folder (created if missing), fsyncs and renames it only
        once the bytes are verified, so on NotFound or ArtifactCorrupted ``dest`` is left as it was.
        """

    @abc.abstractmethod
    def digest(self, key: str) -> Digest:
        """Return the digest recorded at put time, without reading the bytes. NotFound if missing."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under exactly ``key`` (a key that is only a prefix is not)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object under ``key``; idempotent, so a missing key is not an error."""

    @abc.abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with ``prefix`` ("" or ending in '/'); return how many."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Return the sorted keys under ``prefix`` ("" or ending in '/'), never internal files."""


def open_artifacts(url: str, *, s3_endpoint_url: str | None = None) -> ArtifactStore:
    """Open the store named by ``file:///absolute/path`` or ``s3://bucket/optional/prefix``.

    Raises InvalidInput for any other URL. ``s3_endpoint_url`` points at an S3-compatible
    server (MinIO, moto); credentials come from boto3's usual chain.
    """
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise InvalidInput("artifacts URL must not have a query or fragment")
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path.startswith("/"):
        # Imported here: local.py imports this module, and s3.py pulls in boto3 only when used.
        from modelhost.artifacts.local import LocalArtifactStore

        return LocalArtifactStore(Path(unquote(parts.path)))
    if parts.scheme == "s3" and parts.netloc:
        from modelhost.artifacts.s3 import S3ArtifactStore

        return S3ArtifactStore(parts.netloc, parts.path.strip("/"), endpoint_url=s3_endpoint_url)
    # The URL itself is left out of the message: it may carry credentials.
    raise InvalidInput(
        f"unsupported artifacts URL (scheme {parts.scheme!r}): use file:///absolute/path or s3://bucket/prefix"
    )


def open_store(settings: Settings) -> ArtifactStore:
    """The artifact store the settings name, encrypted at rest when a key is configured.

    The server, the training workers and the CLI all open their store here, so they agree
    on the keys. InvalidInput for a malformed key setting (see ``artifacts/keyring.py``).
    """
    from modelhost.artifacts.keyring import KeyFile, Keyring, keyring_from_settings

    store = open_artifacts(settings.resolved_artifacts_url, s3_endpoint_url=settings.s3_endpoint_url)
    keys: Keyring | KeyFile | None = (
        KeyFile(settings)  # read again when it changes: rotation without a restart
        if settings.encryption_key_file is not None
        else keyring_from_settings(settings)
    )
    if keys is None:
        return store
    from modelhost.artifacts.encrypted import EncryptedArtifactStore  # cryptography only when used

    return EncryptedArtifactStore(store, keys)
