"""Reading zip and tar archives safely, entirely in memory.

Nothing here writes to disk, so no entry name ever becomes a path. Names are still checked,
because a name that would escape a folder when extracted (absolute, ``..``, backslashes)
means the archive was made to attack someone; such archives are refused whole, as are
symbolic links, hard links, devices, FIFOs, sparse and encrypted entries.

Decompression is bounded while it happens, by counting the bytes that really come out
rather than trusting sizes in headers: the total, the number of entries, and the ratio of
output to input (per zip entry and for the whole archive). A zip bomb stops at the first
chunk past a limit.
"""

from __future__ import annotations

import io
import lzma
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from modelhost.errors import InvalidInput, PayloadTooLarge, UnsafeContent

CHUNK = 1 << 16
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"[A-Za-z]:")
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    RuntimeError,
    ValueError,
    zlib.error,
    EOFError,
    OSError,
)
_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on what one archive may expand to."""

    max_members: int = 100_000
    """Most entries (directories included)."""
    max_total_bytes: int = 1 << 30
    """Most bytes all entries may decompress to together."""
    max_ratio: float = 100.0
    """Most output bytes per input byte; deflated zeros reach about 1000."""
    ratio_after_bytes: int = 1 << 20
    """The ratio is enforced once this much came out: tiny files compress well legitimately."""


@dataclass(frozen=True)
class Member:
    """One regular file of an archive: its checked path components and its bytes."""

    path: tuple[str, ...]
    data: bytes


def member_path(name: str, where: str) -> tuple[str, ...]:
    """The '/'-separated components of an entry name, or UnsafeContent saying what is wrong.

    A leading ``./`` (what ``tar -C dir .`` writes) is dropped; a trailing '/' marks a folder.
    """
    problem = None
    if "\\" in name:
        problem = "contains a backslash"
    elif name.startswith("/") or _DRIVE.match(name):
        problem = "is an absolute path"
    elif _CONTROL.search(name):
        problem = "contains a control character"
    if problem is None:
        parts = name.rstrip("/").split("/")
        while len(parts) > 1 and parts[0] == ".":
            parts = parts[1:]
        if ".." in parts:
            problem = "contains '..'"
        elif parts != ["."] and any(p in ("", ".") for p in parts):
            problem = "has an empty or '.' path component"
        else:
            return tuple(parts)
    raise UnsafeContent(f"{where}: entry {name[:200]!r} {problem}; the archive is refused")


class _Budget:
    """Counts decompressed bytes against the limits as they come out."""

    def __init__(self, filename: str, limits: ArchiveLimits, archive_size: int) -> None:
        self.filename, self.limits, self.archive_size = filename, limits, max(archive_size, 1)
        self.total = 0

    def read(self, stream: IO[bytes], entry: str, compressed: int | None) -> bytes:
        """All of ``stream``, chunk by chunk, refusing as soon as a limit is passed.

        ``compressed`` is the entry's own compressed size where the format has one (zip).
        """
        chunks, size = [], 0
        while chunk := stream.read(CHUNK):
            chunks.append(chunk)
            size += len(chunk)
            self.total += len(chunk)
            self._check(entry, size, compressed)
        return b"".join(chunks)

    def _check(self, entry: str, size: int, compressed: int | None) -> None:
        lim, where = self.limits, f"{self.filename!r}"
        if self.total > lim.max_total_bytes:
            raise PayloadTooLarge(f"{where} expands to more than {lim.max_total_bytes} bytes")
        over = self.total > lim.ratio_after_bytes and self.total > lim.max_ratio * self.archive_size
        if not over and compressed is not None and size > lim.ratio_after_bytes:
            over = size > lim.max_ratio * max(compressed, 1)
        if over:
            raise UnsafeContent(
                f"{where} entry {entry!r} expands more than {lim.max_ratio:g} times its compressed size; "
                "this looks like a decompression bomb and is refused"
            )


def _count(filename: str, n: int, limits: ArchiveLimits) -> None:
    if n > limits.max_members:
        raise PayloadTooLarge(f"{filename!r} has more than {limits.max_members} entries")


def read_zip(data: bytes, filename: str, limits: ArchiveLimits) -> list[Member]:
    """Every regular file of a zip, in archive order. Folders are skipped (their names checked)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as e:
        raise InvalidInput(f"{filename!r} is not a readable zip archive ({e})") from e
    with zf:
        infos = zf.infolist()
        _count(filename, len(infos), limits)
        if sum(i.compress_size for i in infos) > len(data):  # entries overlap: a known bomb trick
            raise UnsafeContent(f"{filename!r}: its entries overlap or lie about their sizes; refused")
        return list(_zip_members(zf, infos, filename, _Budget(filename, limits, len(data))))


def _zip_members(
    zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], filename: str, budget: _Budget
) -> Iterator[Member]:
    seen: set[tuple[str, ...]] = set()
    for info in infos:
        path = member_path(info.filename, repr(filename))
        where = f"{filename!r} entry {info.filename!r}"
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeContent(f"{where} is a symbolic link; the archive is refused")
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeContent(f"{where} is a device or special file; the archive is refused")
        if path in seen:
            raise UnsafeContent(f"{where} appears twice; the archive is refused")
        seen.add(path)
        if info.is_dir() or stat.S_ISDIR(mode):
            continue
        if info.flag_bits & 0x1:
            raise InvalidInput(f"{where} is encrypted; upload an unencrypted archive")
        try:
            with zf.open(info) as stream:
                yield Member(path, budget.read(stream, info.filename, info.compress_size))
        except _ZIP_ERRORS as e:
            raise InvalidInput(f"{where} cannot be read ({e})") from e


def read_tar(data: bytes, filename: str, limits: ArchiveLimits) -> list[Member]:
    """Every regular file of a tar (plain, gzip, bzip2 or xz), in archive order."""
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115 (closed below)
    except _TAR_ERRORS as e:
        raise InvalidInput(f"{filename!r} is not a readable tar archive ({e})") from e
    with tf:
        return list(_tar_members(tf, filename, limits, _Budget(filename, limits, len(data))))


def _tar_members(
    tf: tarfile.TarFile, filename: str, limits: ArchiveLimits, budget: _Budget
) -> Iterator[Member]:
    seen: set[tuple[str, ...]] = set()
    n = 0
    while True:
        try:
            info = tf.next()
        except _TAR_ERRORS as e:
            raise InvalidInput(f"{filename!r} is damaged after {n} entries ({e})") from e
        if info is None:
            return
        n += 1
        _count(filename, n, limits)
        path = member_path(info.name, repr(filename))
        where = f"{filename!r} entry {info.name!r}"
        if info.issym() or info.islnk():
            raise UnsafeContent(
                f"{where} is a {'symbolic' if info.issym() else 'hard'} link; the archive is refused"
            )
        if info.isdir():
            continue
        if not info.isreg() or info.issparse():
            raise UnsafeContent(f"{where} is a device, FIFO or sparse file; the archive is refused")
        if path in seen:
            raise UnsafeContent(f"{where} appears twice; the archive is refused")
        seen.add(path)
        if budget.total + info.size > limits.max_total_bytes:  # refuse before decompressing it
            raise PayloadTooLarge(f"{filename!r} expands to more than {limits.max_total_bytes} bytes")
        stream = tf.extractfile(info)
        assert stream is not None  # a regular file always has a stream
        try:
            yield Member(path, budget.read(stream, info.name, None))
        except _TAR_ERRORS as e:
            raise InvalidInput(f"{where} cannot be read ({e})") from e


def read_archive(data: bytes, filename: str, kind: str, limits: ArchiveLimits | None = None) -> list[Member]:
    """``read_zip`` or ``read_tar`` by ``kind`` ("zip" or "tar")."""
    reader = read_zip if kind == "zip" else read_tar
    return reader(data, filename, limits or ArchiveLimits())
