"""Dataset uploads of every format through the real app, in-process (ASGITransport): status
codes, the error shape, and what the API reports for each kind."""

from __future__ import annotations

import pickle
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelhost.api.app import create_app
from modelhost.config import Settings
from tests.unit.datasets.craft import (
    image_bytes,
    npy_bytes,
    npz_bytes,
    symlink_entry,
    tar_bytes,
    tar_info,
    zip_bytes,
)

pytestmark = pytest.mark.anyio
ADMIN = "mh_inprocess_admin_key_0123456789abcdefghijklmnop"
GREY = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(home=tmp_path / "home", admin_key=ADMIN, max_upload_bytes=4 << 20))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            client.headers["Authorization"] = f"Bearer {ADMIN}"
            yield client


async def post(
    api: httpx.AsyncClient, name: str, filename: str, data: bytes, **fields: str
) -> httpx.Response:
    files = {"file": (filename, data, "application/octet-stream")}
    return await api.post("/api/v1/datasets", data={"name": name, **fields}, files=files)


UPLOADS = {
    "csv": ("d.csv", b"a,b\n1,x\n2,y\n", {"target": "b"}, "table", 2),
    "jsonl": ("d.jsonl", b'{"a": 1.5}\n{"a": 2}\n{"a": 3}\n', {}, "table", 3),
    "npy": ("d.npy", npy_bytes(np.eye(4, dtype=np.float32)), {"target": "x3"}, "table", 4),
    "npz": ("d.npz", npz_bytes(x=np.zeros((5, 3)), y=np.arange(5)), {}, "arrays", 5),
    "text": ("d.txt", b"Hello, world.\nGoodbye.\n", {}, "text", 2),
    "zip": (
        "d.zip",
        zip_bytes([("a/1.png", image_bytes(GREY)), ("b/2.jpg", image_bytes(GREY, "JPEG"))]),
        {},
        "images",
        2,
    ),
    "tar": ("d.tar.gz", tar_bytes([(tar_info("a/1.png"), image_bytes(GREY))]), {}, "images", 1),
}


@pytest.mark.parametrize("fmt", list(UPLOADS))
async def test_every_format_uploads_and_shows_its_summary(api: httpx.AsyncClient, fmt: str) -> None:
    filename, data, fields, kind, rows = UPLOADS[fmt]
    r = await post(api, f"ds-{fmt}", filename, data, **fields)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["kind"], body["format"], body["num_rows"], body["size_bytes"]) == (
        kind,
        fmt,
        rows,
        len(data),
    )
    assert body["summary"]["kind"] == kind

    shown = (await api.get(f"/api/v1/datasets/ds-{fmt}")).json()
    assert shown == body
    if fmt == "csv":
        assert shown["summary"]["columns"] == [{"name": "a", "type": "int"}, {"name": "b", "type": "str"}]
        assert shown["target"] == "b"
    if fmt == "npz":
        assert shown["target"] == "y"
        assert shown["summary"]["arrays"] == [
            {"name": "x", "shape": [5, 3], "dtype": "float64"},
            {"name": "y", "shape": [5], "dtype": "int64"},
        ]
    if fmt == "zip":
        assert shown["summary"]["classes"] == [{"name": "a", "count": 1}, {"name": "b", "count": 1}]
        assert (shown["summary"]["min_size"], shown["summary"]["channels"]) == ([4, 5], [1])
    if fmt == "text":
        assert shown["summary"] == {"kind": "text", "num_chars": 23, "num_lines": 2, "vocab_size": 14}


async def test_the_format_field_names_the_format(api: httpx.AsyncClient) -> None:
    r = await post(api, "lines", "export.dat", b'{"a": 1}\n', format="jsonl")
    assert r.status_code == 201 and r.json()["format"] == "jsonl"
    r = await post(api, "lines2", "export.dat", b'{"a": 1}\n', format="xlsx")
    assert r.status_code == 400
    assert r.json()["error"] == {
        "type": "invalid_input",
        "message": "format: 'xlsx' is not one of csv, jsonl, npy, npz, text, zip, tar",
    }


@pytest.mark.parametrize(
    ("filename", "data", "status", "kind", "message"),
    [
        ("d.parquet", b"PAR1", 400, "invalid_input", "cannot tell the format of 'd.parquet'"),
        ("model.pkl", b"anything", 422, "unsafe_content", "'model.pkl' looks like a pickle"),
        ("d.npz", pickle.dumps({"x": 1}, protocol=4), 422, "unsafe_content", "'d.npz' looks like a pickle"),
        ("d.zip", zip_bytes([("../../etc/a.png", b"x")]), 422, "unsafe_content", "contains '..'"),
        (
            "d.zip",
            zip_bytes([symlink_entry("a/b.png", "/etc/passwd")]),
            422,
            "unsafe_content",
            "symbolic link",
        ),
        ("d.zip", zip_bytes([("a/b.png", bytes(16 << 20))]), 422, "unsafe_content", "decompression bomb"),
        ("d.txt", b"caf\xe9\n", 400, "invalid_input", "'d.txt' is not UTF-8 text: invalid byte at offset 3"),
        ("d.jsonl", b'{"a": 1}\n"b"\n', 400, "invalid_input", "'d.jsonl' line 2: a str, not a JSON object"),
        ("d.npy", npy_bytes(np.arange(3)), 400, "invalid_input", "shape (3,); a .npy upload must be"),
    ],
    ids=["unknown", "pkl-name", "pickle-npz", "traversal", "symlink", "bomb", "not-utf8", "jsonl", "npy-1d"],
)
async def test_bad_uploads_get_a_4xx_that_names_the_problem(
    api: httpx.AsyncClient, filename: str, data: bytes, status: int, kind: str, message: str
) -> None:
    r = await post(api, "bad", filename, data)
    assert r.status_code == status, r.text
    assert r.json()["error"]["type"] == kind and message in r.json()["error"]["message"]
    assert (await api.get("/api/v1/datasets")).json() == []


async def test_an_upload_over_the_limit_is_413(api: httpx.AsyncClient) -> None:
    r = await post(api, "big", "big.txt", b"a" * (4 << 20) + b"!")
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"


async def test_target_errors_name_the_choices(api: httpx.AsyncClient) -> None:
    r = await post(api, "t", "d.npz", npz_bytes(x=np.zeros((2, 1)), y=np.zeros(2)), target="z")
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "target array 'z' is not in 'd.npz'; arrays: x, y"
    r = await post(api, "t", "d.txt", b"words\n", target="z")
    assert r.status_code == 400 and "target: 'd.txt' has no columns" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("sample", "kind", "rows"),
    [("breast_cancer", "table", 569), ("digits_images", "images", 1797), ("classics", "text", None)],
)
async def test_new_samples_are_offered(
    api: httpx.AsyncClient, sample: str, kind: str, rows: int | None
) -> None:
    r = await api.post(f"/api/v1/datasets/samples/{sample}", json={"name": f"my-{sample}"})
    assert r.status_code == 201, r.text
    assert (r.json()["name"], r.json()["kind"]) == (f"my-{sample}", kind)
    if rows is not None:
        assert r.json()["num_rows"] == rows


async def test_unknown_samples_list_every_sample(api: httpx.AsyncClient) -> None:
    r = await api.post("/api/v1/datasets/samples/mnist", json={})
    assert r.status_code == 400
    assert (
        "sample: Input should be 'digits', 'iris', 'wine', 'breast_cancer', 'digits_images' or 'classics'"
        in r.json()["error"]["message"]
    )
