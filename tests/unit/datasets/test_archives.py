"""Safe archive reading: hostile names, links, special files and bombs are refused whole."""

from __future__ import annotations

import random
import stat
import tarfile
import zipfile

import pytest

from modelhost.datasets.archives import ArchiveLimits, member_path, read_tar, read_zip
from modelhost.errors import InvalidInput, PayloadTooLarge, UnsafeContent
from tests.unit.datasets.craft import symlink_entry, tar_bytes, tar_info, zip_bytes, zip_info

LIMITS = ArchiveLimits()


def test_regular_files_come_back_in_order_with_their_paths() -> None:
    data = zip_bytes([("cats/", b""), ("cats/a.png", b"A"), ("./dogs/b.png", b"BB")])
    members = read_zip(data, "x.zip", LIMITS)
    assert [(m.path, m.data) for m in members] == [(("cats", "a.png"), b"A"), (("dogs", "b.png"), b"BB")]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../evil.png", "contains '..'"),
        ("cats/../../evil.png", "contains '..'"),
        ("/etc/passwd", "is an absolute path"),
        ("C:/Windows/evil.png", "is an absolute path"),
        ("cats\\..\\evil.png", "contains a backslash"),
        ("cats//a.png", "has an empty or '.' path component"),
        ("cats/./a.png", "has an empty or '.' path component"),
        ("cats/a\n.png", "contains a control character"),
    ],
)
def test_hostile_names_refuse_the_whole_zip(name: str, problem: str) -> None:
    data = zip_bytes([("ok/a.png", b"fine"), (name, b"x")])
    with pytest.raises(UnsafeContent, match=f"{problem}; the archive is refused"):
        read_zip(data, "x.zip", LIMITS)


def test_member_path_drops_a_leading_dot_slash_only() -> None:
    assert member_path("./a/b.png", "w") == ("a", "b.png")
    assert member_path("cats/", "w") == ("cats",)


def test_a_symlink_entry_is_refused() -> None:
    data = zip_bytes([("cats/a.png", b"x"), symlink_entry("cats/link.png", "/etc/passwd")])
    with pytest.raises(UnsafeContent, match=r"'x.zip' entry 'cats/link.png' is a symbolic link"):
        read_zip(data, "x.zip", LIMITS)


@pytest.mark.parametrize("kind", [stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK])
def test_device_and_special_zip_entries_are_refused(kind: int) -> None:
    data = zip_bytes([(zip_info("cats/dev", kind | 0o644), b"")])
    with pytest.raises(UnsafeContent, match=r"entry 'cats/dev' is a device or special file"):
        read_zip(data, "x.zip", LIMITS)


def test_duplicate_entries_are_refused() -> None:
    with pytest.warns(UserWarning, match=r"Duplicate name"):  # zipfile itself warns when writing one
        data = zip_bytes([("cats/a.png", b"1"), ("cats/a.png", b"2")])
    with pytest.raises(UnsafeContent, match=r"entry 'cats/a.png' appears twice"):
        read_zip(data, "x.zip", LIMITS)


def test_an_encrypted_entry_is_refused() -> None:
    data = bytearray(zip_bytes([("a.png", b"x")], compression=zipfile.ZIP_STORED))
    data[6] |= 1  # general purpose flag bit 0 (encrypted), local header
    central = data.rindex(b"PK\x01\x02")
    data[central + 8] |= 1  # and in the central directory, which zipfile reads
    with pytest.raises(InvalidInput, match=r"entry 'a.png' is encrypted"):
        read_zip(bytes(data), "x.zip", LIMITS)


def test_a_zip_bomb_stops_early_on_the_ratio() -> None:
    bomb = zip_bytes([("zeros.png", bytes(64 << 20))])  # 64 MiB of zeros in about 64 KiB
    assert len(bomb) < 100_000
    with pytest.raises(UnsafeContent, match=r"'bomb.zip' entry 'zeros.png' expands more than 100 times"):
        read_zip(bomb, "bomb.zip", LIMITS)


def test_one_bomb_member_in_a_big_archive_is_caught_by_its_own_ratio() -> None:
    noise = random.Random(0).randbytes(4 << 20)  # does not compress: the archive's overall ratio is low
    data = zip_bytes([("noise.bin", noise), ("zeros.bin", bytes(8 << 20))])
    with pytest.raises(UnsafeContent, match=r"entry 'zeros.bin' expands more than"):
        read_zip(data, "x.zip", ArchiveLimits(max_ratio=50))


def test_total_size_and_entry_count_are_capped() -> None:
    data = zip_bytes([(f"c/{i}.png", bytes(1000)) for i in range(20)], compression=zipfile.ZIP_STORED)
    with pytest.raises(PayloadTooLarge, match=r"'x.zip' expands to more than 10000 bytes"):
        read_zip(data, "x.zip", ArchiveLimits(max_total_bytes=10_000))
    with pytest.raises(PayloadTooLarge, match=r"'x.zip' has more than 10 entries"):
        read_zip(data, "x.zip", ArchiveLimits(max_members=10))
    assert len(read_zip(data, "x.zip", ArchiveLimits(max_total_bytes=20_000, max_members=20))) == 20


def test_a_zip_whose_entries_overlap_is_refused() -> None:
    one = zip_bytes([("a.bin", bytes(1000))], compression=zipfile.ZIP_STORED)
    # a second central-directory record pointing at the same local entry: the overlap trick
    cd_start = one.index(b"PK\x01\x02")
    eocd = one.index(b"PK\x05\x06")
    record = one[cd_start:eocd]
    second = record[:46] + b"b.bin" + record[46 + 5 :]
    end = bytearray(one[eocd:])
    end[8:12] = (2).to_bytes(2, "little") * 2  # entries on this disk, entries in total
    end[12:16] = (len(record) * 2).to_bytes(4, "little")
    data = one[:cd_start] + record + second + bytes(end)
    with pytest.raises(UnsafeContent, match=r"entries overlap or lie about their sizes"):
        read_zip(data, "x.zip", LIMITS)


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_tar_regular_files_read_in_memory(mode: str) -> None:
    data = tar_bytes([(tar_info("./cats", tarfile.DIRTYPE), b""), (tar_info("./cats/a.png"), b"AAA")], mode)
    members = read_tar(data, "x.tgz", LIMITS)
    assert [(m.path, m.data) for m in members] == [(("cats", "a.png"), b"AAA")]


@pytest.mark.parametrize(
    ("info", "match"),
    [
        (tar_info("cats/l.png", tarfile.SYMTYPE, "/etc/passwd"), "is a symbolic link"),
        (tar_info("cats/h.png", tarfile.LNKTYPE, "cats/a.png"), "is a hard link"),
        (tar_info("cats/dev", tarfile.CHRTYPE), "is a device, FIFO or sparse file"),
        (tar_info("cats/dev", tarfile.BLKTYPE), "is a device, FIFO or sparse file"),
        (tar_info("cats/fifo", tarfile.FIFOTYPE), "is a device, FIFO or sparse file"),
        (tar_info("../evil.png"), "contains '..'"),
        (tar_info("/abs.png"), "is an absolute path"),
    ],
    ids=["symlink", "hardlink", "chr", "blk", "fifo", "dotdot", "absolute"],
)
def test_hostile_tar_members_refuse_the_archive(info: tarfile.TarInfo, match: str) -> None:
    data = tar_bytes([(tar_info("cats/a.png"), b"x"), (info, b"")])
    with pytest.raises(UnsafeContent, match=match):
        read_tar(data, "x.tar.gz", LIMITS)


def test_a_tar_gz_bomb_stops_early() -> None:
    bomb = tar_bytes([(tar_info("zeros.png"), bytes(64 << 20))])
    assert len(bomb) < 200_000
    with pytest.raises(UnsafeContent, match=r"expands more than 100 times"):
        read_tar(bomb, "bomb.tgz", LIMITS)
    with pytest.raises(
        PayloadTooLarge, match=r"expands to more than 1000000 bytes"
    ):  # checked from the header
        read_tar(bomb, "bomb.tgz", ArchiveLimits(max_total_bytes=1_000_000))


def test_not_an_archive_is_invalid() -> None:
    with pytest.raises(InvalidInput, match=r"'x.tar' is not a readable tar archive"):
        read_tar(b"hello world" * 100, "x.tar", LIMITS)
    with pytest.raises(InvalidInput, match=r"'x.zip' is not a readable zip archive"):
        read_zip(b"hello world" * 100, "x.zip", LIMITS)
