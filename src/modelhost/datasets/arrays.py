"""NumPy uploads: one ``.npy`` array (read as a table) or an ``.npz`` of named arrays.

Loading is ``np.load(..., allow_pickle=False)`` after the header has been checked here:
object arrays (which numpy stores as pickles) are refused as unsafe, structured and
non-numeric dtypes as invalid, and the declared shape must match the bytes that follow it,
so a forged header cannot make numpy allocate more than the file holds.
"""

from __future__ import annotations

import io
import math
import re
from tokenize import TokenError

import numpy as np

from modelhost.datasets.archives import ArchiveLimits, read_zip
from modelhost.datasets.formats import ColumnType, Table, refuse_unsafe
from modelhost.errors import InvalidInput, UnsafeContent

NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats
ARRAY_KINDS = NUMERIC_KINDS + "U"  # npz arrays may also hold labels as fixed-width strings
ARRAY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def load_npy(data: bytes, where: str, kinds: str = NUMERIC_KINDS) -> np.ndarray:
    """One ``.npy`` file's array, refused unless its dtype kind is in ``kinds``."""
    refuse_unsafe(data[:2], where)
    fp = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise InvalidInput(f"{where}: .npy format version {version} is not supported (use 1.0 or 2.0)")
    except (ValueError, SyntaxError, TokenError) as e:  # numpy's header parser raises all three
        raise InvalidInput(f"{where}: not a valid .npy file ({e})") from e
    if dtype.hasobject:
        raise UnsafeContent(f"{where}: an object array, which numpy stores as a pickle; modelhost refuses it")
    if dtype.names is not None or dtype.kind not in kinds:
        raise InvalidInput(f"{where}: dtype {dtype} is not supported; use numbers or booleans")
    expected = math.prod(shape) * dtype.itemsize  # Python ints: a forged shape cannot overflow
    if len(data) - fp.tell() != expected:
        raise InvalidInput(
            f"{where}: the header declares shape {tuple(shape)} of {dtype} ({expected} bytes) "
            f"but {len(data) - fp.tell()} bytes follow it"
        )
    try:
        array: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:  # what numpy raises for anything it will not read without pickle
        raise UnsafeContent(f"{where}: numpy refused to load it without pickle ({e})") from e
    _check_finite(array, where)
    return array


def _check_finite(array: np.ndarray, where: str) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise InvalidInput(f"{where}: element {index} is {array[index]}, not a finite number")


def parse_npy(data: bytes, filename: str = "data.npy") -> Table:
    """A 2-D numeric ``.npy`` array as a table with columns ``x0 .. x{n-1}``.

    The column types follow the dtype: integers and booleans are ``int``, floats ``float``.
    """
    array = load_npy(data, repr(filename))
    if array.ndim != 2 or 0 in array.shape:
        raise InvalidInput(
            f"{filename!r}: shape {array.shape}; a .npy upload must be one non-empty 2-D array "
            "(rows x columns)"
        )
    kind: ColumnType = "float" if array.dtype.kind == "f" else "int"
    cells = (array.astype(np.int64) if array.dtype.kind == "b" else array).astype(str)
    columns = [f"x{i}" for i in range(array.shape[1])]
    return Table(columns=columns, types=[kind] * len(columns), rows=cells.tolist())


def parse_npz(
    data: bytes, filename: str = "data.npz", limits: ArchiveLimits | None = None
) -> dict[str, np.ndarray]:
    """An ``.npz``'s named arrays, all with the same (non-zero) first dimension.

    Members are read in memory under ``limits`` (an npz is a zip, so it can be a zip bomb),
    and each must be ``<name>.npy`` with a name like a Python identifier.
    """
    refuse_unsafe(data[:2], filename)
    arrays: dict[str, np.ndarray] = {}
    for member in read_zip(data, filename, limits or ArchiveLimits()):
        entry = "/".join(member.path)
        where = f"{filename!r} entry {entry!r}"
        refuse_unsafe(member.data[:2], entry)
        name = entry.removesuffix(".npy")
        if len(member.path) != 1 or not entry.endswith(".npy") or not ARRAY_NAME.fullmatch(name):
            raise InvalidInput(
                f"{where}: entries must be NAME.npy, NAME a letter or '_' then letters, digits, '_'"
            )
        array = load_npy(member.data, where, ARRAY_KINDS)
        if array.ndim == 0 or array.shape[0] == 0:
            raise InvalidInput(f"{where}: shape {array.shape}; each array needs a non-empty first dimension")
        arrays[name] = array
    if not arrays:
        raise InvalidInput(f"{filename!r} holds no arrays")
    lengths = {n: a.shape[0] for n, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        shapes = ", ".join(f"{n} {a.shape}" for n, a in arrays.items())
        raise InvalidInput(f"{filename!r}: arrays must share their first dimension; got {shapes}")
    return arrays
