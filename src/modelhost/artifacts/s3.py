"""Artifacts as S3 objects under ``s3://bucket/prefix/``, the sha256 kept as object metadata.

PutObject (and a completed multipart upload) is atomic, so no temp objects are needed; the
digest travels in the same request as the bytes (``x-amz-meta-sha256``), so the two can
never be out of step except by someone writing the bucket behind our back, which reads
as ArtifactCorrupted.
"""

from __future__ import annotations

import builtins
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

import boto3
from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError

from modelhost.artifacts.base import (
    CHUNK_SIZE,
    ArtifactStore,
    Digest,
    hash_into,
    is_valid_key,
    iter_chunks,
    normalize_sha256,
    read_all,
    validate_key,
    validate_prefix,
    verify,
    write_atomic,
)
from modelhost.errors import ArtifactCorrupted, InvalidInput, NotFound, StorageError

T = TypeVar("T")
SPOOL_MAX = 64 * 1024 * 1024  # unseekable uploads up to this size are hashed in memory, larger on disk
_BATCH = 1000  # the most keys one DeleteObjects call accepts
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


class S3ArtifactStore(ArtifactStore):
    """Objects in ``bucket`` under ``prefix``; pass ``client`` to reuse a configured boto3 client."""

    def __init__(
        self, bucket: str, prefix: str = "", endpoint_url: str | None = None, client: Any = None
    ) -> None:
        if not _BUCKET.fullmatch(bucket):
            raise InvalidInput(f"invalid S3 bucket name {bucket!r}")
        prefix = prefix.strip("/")
        self.bucket = bucket
        self.prefix = validate_key(prefix) + "/" if prefix else ""
        self._s3 = client if client is not None else boto3.client("s3", endpoint_url=endpoint_url)

    def put(self, key: str, data: bytes | BinaryIO) -> Digest:
        name = self._name(key)
        with _errors(key):
            if isinstance(data, (bytes, bytearray, memoryview)):
                digest = hash_into([data], _discard)
                self._s3.put_object(
                    Bucket=self.bucket, Key=name, Body=bytes(data), Metadata={"sha256": digest.sha256}
                )
                return digest
            with _rewindable(data) as (f, digest):
                extra = {"Metadata": {"sha256": digest.sha256}}
                self._s3.upload_fileobj(f, self.bucket, name, ExtraArgs=extra)
        return digest

    def get(self, key: str, expected_sha256: str | None = None) -> bytes:
        return self._read(key, expected_sha256, read_all)

    def download(self, key: str, dest: Path, expected_sha256: str | None = None) -> Digest:
        dest = Path(dest)
        self._name(key)
        with _errors(key):
            dest.parent.mkdir(parents=True, exist_ok=True)
        return self._read(key, expected_sha256, partial(write_atomic, dest))

    def digest(self, key: str) -> Digest:
        name = self._name(key)
        with _errors(key):
            return _recorded(key, self._s3.head_object(Bucket=self.bucket, Key=name))

    def exists(self, key: str) -> bool:
        try:
            self.digest(key)
        except NotFound:
            return False
        except ArtifactCorrupted:  # there is an object, only its digest is missing
            return True
        return True

    def delete(self, key: str) -> None:
        name = self._name(key)
        with _errors(key):
            self._s3.delete_object(Bucket=self.bucket, Key=name)  # S3 deletes are idempotent

    def delete_prefix(self, prefix: str) -> int:
        validate_prefix(prefix)
        removed = 0
        with _errors(prefix):
            for names in self._pages(prefix):
                for i in range(0, len(names), _BATCH):
                    batch = [{"Key": n} for n in names[i : i + _BATCH]]
                    resp = self._s3.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                    )
                    if resp.get("Errors"):
                        raise StorageError(
                            f"S3 refused to delete {len(resp['Errors'])} objects under {prefix!r}"
                        )
                    removed += len(batch)
        return removed

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        with _errors(prefix):
            keys = [n[len(self.prefix) :] for names in self._pages(prefix) for n in names]
        return sorted(k for k in keys if is_valid_key(k))

    def _name(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _pages(self, prefix: str) -> Iterator[builtins.list[str]]:  # `list` is a method here
        """The object names under ``prefix``, one list per ListObjectsV2 page (at most 1000)."""
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            yield [obj["Key"] for obj in page.get("Contents", [])]

    def _read(
        self,
        key: str,
        expected_sha256: str | None,
        consume: Callable[[Iterable[bytes], Callable[[Digest], None]], T],
    ) -> T:
        """Feed the object's chunks and a verifying check to ``consume``."""
        name = self._name(key)
        expected = normalize_sha256(expected_sha256)
        with _errors(key):
            # Bytes and metadata come from one response, so they belong to the same version.
            resp = self._s3.get_object(Bucket=self.bucket, Key=name)
            check = partial(verify, key, recorded=_recorded(key, resp), expected_sha256=expected)
            with closing(resp["Body"]) as body:
                return consume(body.iter_chunks(CHUNK_SIZE), check)


def _recorded(key: str, resp: dict[str, Any]) -> Digest:
    sha256 = resp.get("Metadata", {}).get("sha256")
    if not sha256:
        raise ArtifactCorrupted(f"artifact {key!r} has no recorded digest")
    return Digest(sha256=sha256, size=int(resp["ContentLength"]))


def _discard(_: bytes) -> None:
    pass


@contextmanager
def _rewindable(data: BinaryIO) -> Iterator[tuple[BinaryIO, Digest]]:
    """Hash ``data``, then hand back a file at its start: ``data`` itself if seekable, else a spool."""
    if getattr(data, "seekable", lambda: False)():
        start = data.tell()
        digest = hash_into(iter_chunks(data), _discard)
        data.seek(start)
        yield data, digest
        return
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX) as spool:
        digest = hash_into(iter_chunks(data), spool.write)
        spool.seek(0)
        yield cast(BinaryIO, spool), digest


@contextmanager
def _errors(key: str) -> Iterator[None]:
    """Convert boto and local file errors to the platform's; messages name the key, not the bucket."""
    try:
        yield
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in _MISSING_CODES:
            raise NotFound(f"artifact {key!r} not found") from e
        raise StorageError(f"S3 error {code or 'unknown'} on artifact {key!r}") from e
    except (BotoCoreError, Boto3Error) as e:
        raise StorageError(f"S3 request failed for artifact {key!r}: {type(e).__name__}") from e
    except OSError as e:
        raise StorageError(f"storage failed for artifact {key!r}: {e.strerror}") from e
