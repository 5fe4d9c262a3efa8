"""Artifacts as files under one root folder, each beside a ``<name>.sha256.json`` sidecar.

Write order: ``put`` renames the data file into place first, then its sidecar. A crash
between the two renames leaves new bytes beside the old digest (or beside none), and every
read reports that as ArtifactCorrupted; it can never hand out wrong bytes. Data-first also lets
a reader tell a racing ``put`` from corruption: it reads the sidecar before the data, so a
mismatch seen while the sidecar changed underneath it is a concurrent put, and the read is
retried — and a mismatch seen while the data file is newer than its sidecar (or was replaced
after it was opened) is a put between its two renames, so the read waits for the digest and
retries. ``delete`` removes the data first, so a crash leaves only an orphan sidecar, which
reads as NotFound. Two puts racing on one key can still pair one's bytes with the other's
digest; that too reads as ArtifactCorrupted until the key is written again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import BinaryIO, TypeVar

from modelhost.artifacts.base import (
    SIDECAR_SUFFIX,
    TEMP_PREFIX,
    ArtifactStore,
    Digest,
    fsync_dir,
    is_valid_key,
    iter_chunks,
    normalize_sha256,
    read_all,
    validate_key,
    validate_prefix,
    verify,
    write_atomic,
)
from modelhost.errors import ArtifactCorrupted, NotFound, StorageError

T = TypeVar("T")
_READ_ATTEMPTS = 6
_SIDECAR_WAIT_S = 0.02
_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


class LocalArtifactStore(ArtifactStore):
    """Files under ``root`` (folders 0700, files 0600); see the module docstring for crash safety."""

    def __init__(self, root: Path) -> None:
        root = Path(root)
        with suppress(FileExistsError):
            root.mkdir(mode=0o700, parents=True)
        self.root = root.resolve()

    def put(self, key: str, data: bytes | BinaryIO) -> Digest:
        path = self._path(key)
        with _storage_errors(key):
            self._make_folders(path.parent)
            digest = write_atomic(path, iter_chunks(data))
            write_atomic(_sidecar(path), [json.dumps(asdict(digest)).encode()])
        return digest

    def get(self, key: str, expected_sha256: str | None = None) -> bytes:
        return self._read(key, expected_sha256, read_all)

    def download(self, key: str, dest: Path, expected_sha256: str | None = None) -> Digest:
        dest = Path(dest)
        with _storage_errors(key):
            dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self._read(key, expected_sha256, partial(write_atomic, dest))

    def digest(self, key: str) -> Digest:
        return self._recorded(key, self._path(key))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        with _storage_errors(key):
            for p in (path, _sidecar(path)):  # data first: see the module docstring
                with suppress(*_MISSING):
                    p.unlink()
            with suppress(*_MISSING):
                fsync_dir(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        if prefix:  # best effort: drop the folders the keys lived in, so the names are free again
            top = self._path(prefix[:-1])
            for folder, _, _ in os.walk(top, topdown=False):
                with suppress(OSError):
                    os.rmdir(folder)
        return len(keys)

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        start = self._path(prefix[:-1]) if prefix else self.root
        keys = []
        for folder, _, names in os.walk(start):  # does not follow symlinked folders
            for name in names:
                full = Path(folder, name)
                if name.startswith(TEMP_PREFIX) or name.endswith(SIDECAR_SUFFIX) or full.is_symlink():
                    continue
                key = full.relative_to(self.root).as_posix()
                if is_valid_key(key):
                    keys.append(key)
        return sorted(keys)

    def _path(self, key: str) -> Path:
        """The data file of ``key``, refused if it or its sidecar resolves outside the root."""
        path = self.root / validate_key(key)
        for p in (path, _sidecar(path)):
            try:
                inside = p.resolve().is_relative_to(self.root)
            except (OSError, RuntimeError) as e:  # a symlink loop
                raise StorageError(f"artifact {key!r} cannot be resolved") from e
            if not inside:
                raise StorageError(f"artifact {key!r} resolves outside the store root; refusing it")
        return path

    def _make_folders(self, folder: Path) -> None:
        current = self.root
        for part in folder.relative_to(self.root).parts:
            current = current / part
            with suppress(FileExistsError):
                current.mkdir(mode=0o700)

    def _recorded(self, key: str, path: Path) -> Digest:
        if not path.is_file():
            raise NotFound(f"artifact {key!r} not found")
        try:
            raw = json.loads(_sidecar(path).read_bytes())
            return Digest(sha256=str(raw["sha256"]), size=int(raw["size"]))
        except FileNotFoundError as e:
            raise ArtifactCorrupted(f"artifact {key!r} has no recorded digest") from e
        except (ValueError, KeyError, TypeError) as e:
            raise ArtifactCorrupted(f"the recorded digest of artifact {key!r} is unreadable") from e
        except OSError as e:
            raise StorageError(f"cannot read the digest of artifact {key!r}: {e.strerror}") from e

    def _read(
        self,
        key: str,
        expected_sha256: str | None,
        consume: Callable[[Iterable[bytes], Callable[[Digest], None]], T],
    ) -> T:
        """Feed the object's chunks and a verifying check to ``consume``; retry across a racing put."""
        path = self._path(key)
        expected = normalize_sha256(expected_sha256)
        last: ArtifactCorrupted | None = None
        for attempt in range(_READ_ATTEMPTS):
            recorded = self._recorded(key, path)
            check = partial(verify, key, recorded=recorded, expected_sha256=expected)
            read: os.stat_result | None = None
            try:
                with _open(key, path) as f, _storage_errors(key):
                    read = os.fstat(f.fileno())
                    return consume(iter_chunks(f), check)
            except ArtifactCorrupted as e:
                if self._recorded(key, path) != recorded:
                    continue  # a put replaced the sidecar meanwhile: read again
                if not _put_under_way(path, read) or attempt == _READ_ATTEMPTS - 1:
                    raise  # nothing writing (or nothing came of waiting): real corruption
                last = e
                time.sleep(_SIDECAR_WAIT_S * (attempt + 1))  # new bytes, their digest not yet renamed in
        raise ArtifactCorrupted(f"artifact {key!r} kept changing while it was read") from last


def _put_under_way(path: Path, read: os.stat_result | None) -> bool:
    """Whether the data file was replaced (another inode than the one read) or is newer than its
    sidecar: a ``put`` between its two renames, whose digest is about to follow."""
    try:
        now, side = path.stat(), _sidecar(path).stat()
    except OSError:
        return False
    replaced = read is not None and (now.st_ino, now.st_dev) != (read.st_ino, read.st_dev)
    return replaced or now.st_mtime_ns > side.st_mtime_ns


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


@contextmanager
def _open(key: str, path: Path) -> Iterator[BinaryIO]:
    try:
        f = path.open("rb")
    except _MISSING as e:
        raise NotFound(f"artifact {key!r} not found") from e
    except OSError as e:
        raise StorageError(f"cannot open artifact {key!r}: {e.strerror}") from e
    with f:
        yield f


@contextmanager
def _storage_errors(key: str) -> Iterator[None]:
    try:
        yield
    except OSError as e:  # strerror only: the full path would reveal the server's layout
        raise StorageError(f"storage failed for artifact {key!r}: {e.strerror}") from e
