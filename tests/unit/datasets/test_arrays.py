"""NPY and NPZ uploads: tables and named arrays, and every way a numpy file can be unsafe."""

from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import pytest

from modelhost.datasets.archives import ArchiveLimits
from modelhost.datasets.arrays import parse_npy, parse_npz
from modelhost.errors import InvalidInput, UnsafeContent
from tests.unit.datasets.craft import npy_bytes, npz_bytes, zip_bytes


def test_npy_is_a_table_with_columns_x0_to_xn() -> None:
    table = parse_npy(npy_bytes(np.array([[0.5, 1.0, 2.0], [3.0, 4.25, 5.0]], dtype=np.float32)))
    assert table.columns == ["x0", "x1", "x2"]
    assert table.types == ["float"] * 3
    assert table.numeric(["x1", "x2"]).tolist() == [[1.0, 2.0], [4.25, 5.0]]


def test_integer_and_boolean_npy_columns_are_int() -> None:
    assert parse_npy(npy_bytes(np.array([[1, -2], [3, 4]], dtype=np.int16))).rows == [["1", "-2"], ["3", "4"]]
    table = parse_npy(npy_bytes(np.array([[True], [False]])))
    assert (table.types, table.rows) == (["int"], [["1"], ["0"]])


def object_npy() -> bytes:
    """What an attacker would send: numpy pickles object arrays when allowed to."""
    out = io.BytesIO()
    np.save(out, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return out.getvalue()


def test_object_npy_is_refused_as_a_pickle() -> None:
    with pytest.raises(UnsafeContent, match=r"'evil.npy': an object array, which numpy stores as a pickle"):
        parse_npy(object_npy(), "evil.npy")


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.arange(4.0), r"shape \(4,\); a .npy upload must be one non-empty 2-D array"),
        (np.zeros((0, 3)), r"shape \(0, 3\)"),
        (np.array([["a", "b"]]), "dtype <U1 is not supported"),
        (np.zeros((1, 2), dtype=[("a", "f4"), ("b", "i4")]), "is not supported"),
        (np.array([[1.0, np.nan]]), r"element \(0, 1\) is nan, not a finite number"),
        (np.array([[1 + 2j]]), "dtype complex128 is not supported"),
    ],
    ids=["1-d", "empty", "strings", "structured", "nan", "complex"],
)
def test_unusable_npy_is_refused(array: np.ndarray, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        parse_npy(npy_bytes(array), "a.npy")


def test_a_forged_npy_header_cannot_make_numpy_allocate() -> None:
    out = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (100_000, 100_000)}  # 80 GB
    np.lib.format.write_array_header_1_0(out, header)
    out.write(bytes(32))
    with pytest.raises(InvalidInput, match=r"declares shape \(100000, 100000\) of float64 .* but 32 bytes"):
        parse_npy(out.getvalue(), "a.npy")


@pytest.mark.parametrize(
    "data",
    [
        b"\x93NUMPY\x01\x00garbage",
        b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f8',  \n",
        b"\x93NUMPY",
        b"\x93NUMPY\x07\x00",
    ],
    ids=["header-garbage", "header-unclosed", "truncated", "version-7"],
)
def test_a_malformed_npy_is_invalid(data: bytes) -> None:
    with pytest.raises(InvalidInput, match=r"'a.npy': "):
        parse_npy(data, "a.npy")


def test_npz_gives_named_arrays_sharing_the_first_dimension() -> None:
    x, y = np.arange(12, dtype=np.float32).reshape(3, 2, 2), np.array(["cat", "dog", "cat"])
    arrays = parse_npz(npz_bytes(x=x, y=y))
    assert list(arrays) == ["x", "y"]
    assert arrays["x"].dtype == np.float32 and np.array_equal(arrays["x"], x)
    assert arrays["y"].tolist() == ["cat", "dog", "cat"]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (
            npz_bytes(x=np.zeros((3, 2)), y=np.zeros(4)),
            r"must share their first dimension; got x \(3, 2\), y \(4,\)",
        ),
        (npz_bytes(x=np.zeros((0, 2))), r"entry 'x.npy': shape \(0, 2\)"),
        (npz_bytes(x=np.float32(1.0)), r"entry 'x.npy': shape \(\)"),
        (zip_bytes([("notes.txt", b"hello")]), "entry 'notes.txt': entries must be NAME.npy"),
        (zip_bytes([("sub/x.npy", npy_bytes(np.zeros(2)))]), "entry 'sub/x.npy': entries must be NAME.npy"),
        (zip_bytes([("1x.npy", npy_bytes(np.zeros(2)))]), "entry '1x.npy': entries must be NAME.npy"),
        (zip_bytes([]), "holds no arrays"),
        (b"PK\x03\x04 not really a zip", "is not a readable zip archive"),
    ],
    ids=["first-dims", "empty-array", "scalar", "not-npy", "nested", "bad-name", "no-arrays", "not-zip"],
)
def test_bad_npz_is_refused(data: bytes, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        parse_npz(data, "d.npz")


def test_a_pickle_renamed_npz_is_refused() -> None:
    with pytest.raises(UnsafeContent, match=r"'model.npz' looks like a pickle"):
        parse_npz(pickle.dumps({"x": [1, 2]}, protocol=4), "model.npz")


def test_pickles_inside_an_npz_are_refused() -> None:
    with pytest.raises(UnsafeContent, match=r"'data.pkl' looks like a pickle"):
        parse_npz(zip_bytes([("data.pkl", b"\x80\x04K\x01.")]), "d.npz")
    with pytest.raises(UnsafeContent, match=r"'x.npy' looks like a pickle"):
        parse_npz(zip_bytes([("x.npy", pickle.dumps([1], protocol=5))]), "d.npz")
    with pytest.raises(UnsafeContent, match=r"entry 'x.npy': an object array"):
        parse_npz(zip_bytes([("x.npy", object_npy())]), "d.npz")


def test_an_npz_zip_bomb_stops_at_the_ratio_limit() -> None:
    zeros = np.zeros((4096, 1024), dtype=np.float32)  # 16 MiB of zeros deflate to ~16 KiB
    data = npz_bytes(x=zeros)
    assert len(data) < 100_000
    with pytest.raises(UnsafeContent, match=r"expands more than 100 times its compressed size"):
        parse_npz(data, "bomb.npz")
    with pytest.raises(UnsafeContent):
        parse_npz(data, "bomb.npz", ArchiveLimits(max_total_bytes=1 << 40))  # the ratio alone stops it
    assert parse_npz(data, "ok.npz", ArchiveLimits(max_ratio=2000))["x"].shape == (4096, 1024)


def test_zip_stored_npz_reads_without_compression() -> None:
    data = zip_bytes([("x.npy", npy_bytes(np.ones((2, 3))))], compression=zipfile.ZIP_STORED)
    assert parse_npz(data)["x"].sum() == 6
