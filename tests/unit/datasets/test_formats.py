"""CSV, JSON Lines and text parsing, format detection and the pickle refusal."""

from __future__ import annotations

import pickle

import pytest

from modelhost.datasets.formats import detect_format, parse_csv, parse_jsonl, parse_text, refuse_unsafe
from modelhost.errors import InvalidInput, UnsafeContent


def test_csv_and_jsonl_give_the_same_typed_table() -> None:
    csv = parse_csv(b"a,b,c\n1,2.5,red\n3,4,blue\n")
    jsonl = parse_jsonl(b'{"a": 1, "b": 2.5, "c": "red"}\n\n{"c": "blue", "b": 4, "a": 3}\n')

    assert jsonl == csv
    assert (csv.columns, csv.types, csv.rows) == (
        ["a", "b", "c"],
        ["int", "float", "str"],
        [["1", "2.5", "red"], ["3", "4", "blue"]],
    )


def test_jsonl_booleans_become_integers() -> None:
    table = parse_jsonl(b'{"ok": true, "x": 1}\n{"ok": false, "x": 2}\n')
    assert (table.types, table.column("ok")) == (["int", "int"], ["1", "0"])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b'{"a": 1}\n[1, 2]\n', "'d.jsonl' line 2: a list, not a JSON object"),
        (
            b'{"a": 1}\n\n{"b": 2}\n',
            r"line 3: keys differ from the first object's \(missing \['a'\], unexpected \['b'\]\)",
        ),
        (b'{"a": 1, "b": 2}\n{"a": 3}\n', r"line 2: keys differ .*missing \['b'\]"),
        (b'{"a": 1}\n{"a": {"x": 1}}\n', "line 2, key 'a' is a JSON dict; values must be"),
        (b'{"a": 1}\n{"a": null}\n', "line 2, key 'a' is null"),
        (b'{"a": 1}\n{"a": NaN}\n', "line 2, column 'a': 'nan' is not a finite number"),
        (b'{"a": 1}\n{"a": 1\n', r"line 2: not JSON \(Expecting ',' delimiter at column 8\)"),
        (b"\n\n", "is empty"),
        (b"{}\n", "line 1: the object has no keys"),
        (b'{"a": 1}\n\xff\n', r"is not UTF-8 text \(byte 9\)"),
        (b'{"": 1}\n', "column 1 of line 1's keys has no name"),
    ],
    ids=[
        "not-object",
        "other-keys",
        "missing-key",
        "nested",
        "null",
        "nan",
        "bad-json",
        "empty",
        "no-keys",
        "not-utf8",
        "empty-key",
    ],
)
def test_bad_jsonl_names_the_line(data: bytes, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        parse_jsonl(data, "d.jsonl")


def test_csv_errors_name_the_physical_line() -> None:
    # a quoted field spanning two lines: the bad row is on line 4 of the file, not record 3
    with pytest.raises(InvalidInput, match=r"'d.csv' line 4: 1 fields, header has 2"):
        parse_csv(b'a,b\n"x\ny",1\n2\n', "d.csv")
    with pytest.raises(InvalidInput, match=r"line 3, column 'b': 'inf' is not a finite number"):
        parse_csv(b"a,b\n1,2\n3,inf\n", "d.csv")


def test_text_is_utf8_with_unix_line_ends() -> None:
    assert parse_text("\ufeffOne\r\ntwo\rthree é\n".encode()) == "One\ntwo\nthree é\n"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"hello \xe2\x28\xa1 world", "'c.txt' is not UTF-8 text: invalid byte at offset 6"),
        (b"abc\x00def", "'c.txt' has a NUL byte at offset 3"),
        (b" \n\t\n", "'c.txt' is empty"),
    ],
    ids=["invalid-utf8", "nul", "blank"],
)
def test_bad_text_names_the_byte_offset(data: bytes, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        parse_text(data, "c.txt")


@pytest.mark.parametrize(
    ("filename", "declared", "expected"),
    [
        ("x.csv", None, "csv"),
        ("X.JSONL", None, "jsonl"),
        ("x.ndjson", None, "jsonl"),
        ("x.npy", None, "npy"),
        ("x.npz", None, "npz"),
        ("book.txt", None, "text"),
        ("imgs.zip", None, "zip"),
        ("imgs.tar.gz", None, "tar"),
        ("imgs.tgz", None, "tar"),
        ("data.bin", "csv", "csv"),
    ],
)
def test_format_comes_from_the_suffix_or_the_declaration(
    filename: str, declared: str | None, expected: str
) -> None:
    assert detect_format(filename, declared) == expected


def test_unknown_format_lists_what_is_accepted() -> None:
    with pytest.raises(InvalidInput, match=r"cannot tell the format of 'x.xlsx'.*\.csv.*\.zip"):
        detect_format("x.xlsx")
    with pytest.raises(
        InvalidInput, match=r"format: 'parquet' is not one of csv, jsonl, npy, npz, text, zip, tar"
    ):
        detect_format("x.csv", "parquet")


@pytest.mark.parametrize("filename", ["model.pkl", "m.PT", "m.pth", "m.joblib", "x.pickle", "w.ckpt"])
def test_pickle_suffixes_are_refused(filename: str) -> None:
    with pytest.raises(UnsafeContent, match=r"looks like a pickle"):
        refuse_unsafe(b"ab", filename)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("parse", [parse_csv, parse_jsonl, parse_text])
def test_pickle_bytes_are_refused_whatever_the_name(protocol: int, parse) -> None:
    with pytest.raises(UnsafeContent, match=r"'weights.bin' looks like a pickle"):
        parse(pickle.dumps([1, 2], protocol=protocol), "weights.bin")
