"""Encryption at rest as a wrapper around any ArtifactStore (local files, S3), which stay unchanged.

Writes go to the inner store in the format of :mod:`modelhost.artifacts.crypto`, streamed
chunk by chunk; the digest ``put`` returns (and the platform records) is the sha256 of the
plaintext. Reads fetch the stored object into a private temp file (ciphertext only, so the
plaintext is never held twice), then decrypt it chunk by chunk, every chunk authenticated:
tampering, truncation, or an object moved under another key raises ArtifactCorrupted before
``get`` hands back a byte or ``download`` renames its file into place. An object under a key
the keyring lacks raises StorageError naming the key id.

Objects that do not start with the format's magic bytes were written before encryption was
turned on; they read as they are, and :meth:`EncryptedArtifactStore.reencrypt` (``modelhost
encryption rotate``) rewrites them, as it does objects under old keys.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from functools import partial
from pathlib import Path
from typing import BinaryIO, TypeVar, cast

from modelhost.artifacts import crypto
from modelhost.artifacts.base import (
    ArtifactStore,
    Digest,
    hash_into,
    iter_chunks,
    normalize_sha256,
    read_all,
    validate_key,
    verify,
    write_atomic,
)
from modelhost.artifacts.keyring import Keyring
from modelhost.errors import NotFound

T = TypeVar("T")
Consumer = Callable[[Iterable[bytes], Callable[[Digest], None]], T]
"""What reads an object: ``read_all`` or ``write_atomic``, given the chunks and a final check."""


class Rewrite(Enum):
    """What :meth:`EncryptedArtifactStore.reencrypt` did with one object."""

    REWRITTEN = "rewritten"
    """Decrypted (or read in the clear) and written again under the current key."""
    CURRENT = "current"
    """Already in its target form: nothing written."""
    CHANGED = "changed"
    """Written or deleted by someone else meanwhile (so already in the current form): left alone."""


@dataclass(frozen=True)
class _Fetched:
    """An object copied out of the inner store: the open file after its header, and what it is."""

    file: BinaryIO
    head: bytes
    header: crypto.Header | None
    stored: Digest  # of the bytes as stored (ciphertext), verified by the inner store


class EncryptedArtifactStore(ArtifactStore):
    """``inner`` with every object encrypted under ``keyring.current`` (in the clear if None)."""

    def __init__(self, inner: ArtifactStore, keyring: Keyring | Callable[[], Keyring]) -> None:
        """``keyring``: fixed, or a function giving the keys in use at each call (a KeyFile)."""
        self.inner = inner
        self._keys = keyring if callable(keyring) else lambda: keyring

    @property
    def keyring(self) -> Keyring:
        return self._keys()

    def put(self, key: str, data: bytes | BinaryIO) -> Digest:
        validate_key(key)
        current = self.keyring.current
        if current is None:
            return self.inner.put(key, data)
        h, size = hashlib.sha256(), 0

        def counted(chunks: Iterable[bytes]) -> Iterator[bytes]:
            nonlocal size
            for chunk in chunks:
                h.update(chunk)
                size += len(chunk)
                yield chunk

        encrypted = _Reader(crypto.encrypt(current, key, counted(iter_chunks(data))))
        self.inner.put(key, cast(BinaryIO, encrypted))
        return Digest(sha256=h.hexdigest(), size=size)

    def get(self, key: str, expected_sha256: str | None = None) -> bytes:
        return self._read(key, expected_sha256, read_all)

    def download(self, key: str, dest: Path, expected_sha256: str | None = None) -> Digest:
        validate_key(key)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        return self._read(key, expected_sha256, partial(write_atomic, dest))

    def digest(self, key: str) -> Digest:
        """The plaintext digest. Unlike the plain stores this reads (and authenticates) the
        whole object: the digest is not stored beside the ciphertext, the AEAD vouches for it."""
        return self._read(key, None, lambda chunks, _check: hash_into(chunks, _discard))

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def delete_prefix(self, prefix: str) -> int:
        return self.inner.delete_prefix(prefix)

    def list(self, prefix: str = "") -> list[str]:
        return self.inner.list(prefix)

    def key_id_of(self, key: str) -> bytes | None:
        """The id of the key ``key`` is encrypted with; None for an object in the clear."""
        with self._fetch(key) as fetched:
            return fetched.header.key_id if fetched.header else None

    def reencrypt(self, key: str) -> Rewrite:
        """Rewrite one object under the current key (or in the clear when there is none).

        The new form is built in a temp file first and verified as it is read, so a corrupt
        object raises and stays as it was. Just before the write the stored digest is checked
        again: an object that changed meanwhile was written by the platform in the current form,
        and is left alone. The inner ``put`` is atomic, so readers see the old or the new form.
        """
        current = self.keyring.current
        target = current.id if current else None
        try:
            with self._fetch(key) as fetched, tempfile.TemporaryFile() as staged:
                if (fetched.header.key_id if fetched.header else None) == target:
                    return Rewrite.CURRENT
                chunks = self._plaintext(key, fetched)
                if current is not None:
                    chunks = crypto.encrypt(current, key, chunks)
                for chunk in chunks:
                    staged.write(chunk)
                staged.seek(0)
                if self.inner.digest(key) != fetched.stored:
                    return Rewrite.CHANGED
                self.inner.put(key, staged)
        except NotFound:
            return Rewrite.CHANGED
        return Rewrite.REWRITTEN

    def _read(self, key: str, expected_sha256: str | None, consume: Consumer[T]) -> T:
        """Feed the plaintext chunks and a check of the caller's expected sha256 to ``consume``."""
        expected = normalize_sha256(expected_sha256)
        with self._fetch(key) as fetched:
            check = partial(_check_plaintext, key, expected)
            return consume(self._plaintext(key, fetched), check)

    @contextmanager
    def _fetch(self, key: str) -> Iterator[_Fetched]:
        """Copy the stored object to a private temp folder (removed on exit) and read its header."""
        validate_key(key)
        with tempfile.TemporaryDirectory(prefix="modelhost-") as tmp:
            path = Path(tmp, "object")
            stored = self.inner.download(key, path)
            with path.open("rb") as f:
                head = f.read(crypto.HEADER_SIZE)
                yield _Fetched(f, head, crypto.parse_header(key, head), stored)

    def _plaintext(self, key: str, fetched: _Fetched) -> Iterator[bytes]:
        if fetched.header is None:  # in the clear; the inner store verified its digest
            return _prepend(fetched.head, iter_chunks(fetched.file))
        return crypto.decrypt(self.keyring, key, fetched.header, fetched.file)


def _check_plaintext(key: str, expected: str | None, actual: Digest) -> None:
    """The AEAD already vouched for the bytes; only a caller's expected sha256 is left to check."""
    verify(key, actual, recorded=actual, expected_sha256=expected)


def _prepend(first: bytes, rest: Iterable[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _discard(_: bytes) -> None:
    pass


class _Reader(io.RawIOBase):
    """A read-only, unseekable file over an iterator of byte chunks (what ``inner.put`` reads)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n
