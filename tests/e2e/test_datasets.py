"""Datasets of every kind through the real server: the `modelhost datasets` CLI (each command a
real subprocess) and the Python client, over HTTP on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelhost.client import Client
from modelhost.errors import InvalidInput, UnsafeContent
from tests.e2e.test_cli_flow import cli
from tests.servers import ADMIN_KEY, Server
from tests.unit.datasets.craft import image_bytes, npz_bytes, symlink_entry, zip_bytes

pytestmark = pytest.mark.slow


def test_cli_uploads_and_shows_every_kind(server: Server, tmp_path: Path) -> None:
    (tmp_path / "pets.zip").write_bytes(
        zip_bytes(
            [
                ("cat/1.png", image_bytes(np.zeros((6, 4), np.uint8))),
                ("dog/2.png", image_bytes(np.ones((5, 7, 3), np.uint8))),
            ]
        )
    )
    (tmp_path / "arrays.npz").write_bytes(npz_bytes(x=np.zeros((3, 2), np.float32), y=np.arange(3)))
    book = "It was a dark and stormy night.\nThe end.\n"
    (tmp_path / "book.txt").write_text(book)
    (tmp_path / "rows.export").write_text('{"size": 1, "kind": "a"}\n{"size": 2, "kind": "b"}\n')

    pets = json.loads(cli(server, "datasets", "upload", str(tmp_path / "pets.zip"), "--name", "pets").stdout)
    assert (pets["kind"], pets["num_rows"]) == ("images", 2)
    shown = cli(server, "datasets", "show", "pets").stdout
    assert "dataset 'pets'" in shown and "images from zip, 2 examples" in shown
    assert "│ cat  │ 1 " in shown and "│ dog  │ 1 " in shown and "sizes 5x4 to 6x7, channels [1, 3]" in shown

    cli(server, "datasets", "upload", str(tmp_path / "arrays.npz"), "--name", "arrays")
    shown = cli(server, "datasets", "show", "arrays").stdout
    assert "arrays from npz, 3 examples" in shown and "target y" in shown and "│ [3, 2] │ float32 │" in shown

    cli(
        server, "datasets", "upload", str(tmp_path / "book.txt"), "--name", "book", "--description", "a novel"
    )
    assert f"{len(book)} characters, 2 lines" in cli(server, "datasets", "show", "book").stdout
    record = json.loads(cli(server, "datasets", "show", "book", "--json").stdout)
    assert (record["kind"], record["description"], record["summary"]["num_chars"]) == (
        "text",
        "a novel",
        len(book),
    )

    args = ("datasets", "upload", str(tmp_path / "rows.export"), "--name", "rows")
    assert json.loads(cli(server, *args, "--format", "jsonl", "--target", "kind").stdout)["target"] == "kind"
    assert "│ size │ int  │" in cli(server, "datasets", "show", "rows").stdout

    listed = cli(server, "datasets", "list").stdout
    assert "│ pets " in listed and "│ images │ zip    │ 2 " in listed
    sample = json.loads(cli(server, "datasets", "sample", "digits_images").stdout)
    assert (sample["kind"], sample["num_rows"], sample["format"]) == ("images", 1797, "zip")


def test_cli_reports_refusals(server: Server, tmp_path: Path) -> None:
    (tmp_path / "evil.zip").write_bytes(zip_bytes([symlink_entry("cat/a.png", "/etc/shadow")]))
    failed = cli(server, "datasets", "upload", str(tmp_path / "evil.zip"), "--name", "evil", ok=False)
    assert failed.returncode != 0
    assert "unsafe_content" in failed.stderr and "'cat/a.png' is a symbolic link" in failed.stderr


def test_client_uploads_with_a_format(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "corpus.data"
    path.write_bytes(b"Call me Ishmael.\n")
    with Client(server.url, ADMIN_KEY) as client:
        ds = client.upload_dataset(path, "corpus", format="text", description="one line")
        assert (ds["kind"], ds["summary"]["num_lines"], ds["description"]) == ("text", 1, "one line")
        with pytest.raises(InvalidInput, match=r"cannot tell the format of 'corpus.data'"):
            client.upload_dataset(path, "corpus2")
        (tmp_path / "w.pt").write_bytes(b"PK\x03\x04 torch zip")
        with pytest.raises(UnsafeContent, match=r"'w.pt' looks like a pickle"):
            client.upload_dataset(tmp_path / "w.pt", "weights")
        names = {d["name"] for d in client.list_datasets()}
        assert "corpus" in names and not names & {"corpus2", "weights"}
