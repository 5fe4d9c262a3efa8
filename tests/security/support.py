"""Shared pieces of the attack suite: a real server with canary files planted around its home,
raw HTTP (for requests httpx refuses to send), and the malicious pickles the suite throws.

Test modules import the fixtures they use from here (``from tests.security.support import ...``),
so the suite needs no conftest of its own.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import socket
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import fresh_postgres_db
from tests.servers import ADMIN_KEY, Server, start_server

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
CANARY_TEXT = b"canary: modelhost must never read, write or delete this\n"


@dataclass
class Target:
    """The server under attack and the files planted around its home.

    ``tmp`` holds ``home/`` (the server's) and, beside it, ``canary.txt``; inside the home
    sits ``artifacts-evil/canary.txt`` (a sibling-prefix folder of ``artifacts/``), and in the
    artifacts the symlinks ``models/evil`` -> ``tmp`` and ``models/sibling`` -> ``artifacts-evil``
    (where a model named ``evil`` or ``sibling`` would be stored). Everything outside
    ``home/artifacts`` and the database must look the same after an attack as before it.
    """

    server: Server
    tmp: Path
    marker: Path
    """Where a malicious pickle writes when it is unpickled: must never exist."""

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def home(self) -> Path:
        return self.server.home

    @property
    def artifacts(self) -> Path:
        return self.home / "artifacts"

    def outside_files(self) -> dict[str, bytes]:
        """Every file under ``tmp`` except the artifacts, the database and the server's logs."""
        found = {}
        for path in sorted(self.tmp.rglob("*")):
            rel = path.relative_to(self.tmp)
            if rel.parts[:2] == ("home", "artifacts") or not path.is_file() or path.is_symlink():
                continue
            if rel.name.startswith(("modelhost.db", "server-")) or rel.parts[:2] == ("home", "logs"):
                continue
            found[str(rel)] = path.read_bytes()
        return found

    def artifact_files(self) -> set[str]:
        return {str(p.relative_to(self.artifacts)) for p in self.artifacts.rglob("*") if p.is_file()}


def plant(tmp: Path) -> None:
    """The canaries and the symlink described on :class:`Target`."""
    (tmp / "canary.txt").write_bytes(CANARY_TEXT)
    evil = tmp / "home" / "artifacts-evil"
    evil.mkdir(parents=True)
    (evil / "canary.txt").write_bytes(CANARY_TEXT)
    models = tmp / "home" / "artifacts" / "models"
    models.mkdir(parents=True)
    os.symlink(tmp, models / "evil")
    os.symlink(evil, models / "sibling")


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A server of its own per test module, canaries planted before it starts."""
    tmp = tmp_path_factory.mktemp("attack")
    plant(tmp)
    srv = start_server(tmp / "home")
    t = Target(srv, tmp, tmp / "PWNED")
    before = t.outside_files()
    yield t
    srv.stop()
    assert not t.marker.exists(), "a pickle was unpickled"
    assert t.outside_files() == before, "files outside the artifacts root changed"
    assert (tmp / "home" / "artifacts" / "models" / "evil").is_symlink()


@pytest.fixture(scope="module")
def admin(target: Target) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=target.url, headers=AUTH, timeout=60) as c:
        yield c


@contextlib.contextmanager
def server_on(database: str, home: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    """A server whose metadata lives in ``database``: "sqlite" (in the home) or "postgresql"
    (a fresh database on the test server, dropped afterwards)."""
    with contextlib.ExitStack() as stack:
        env = {}
        if database == "postgresql":
            env["MODELHOST_DATABASE_URL"] = stack.enter_context(
                fresh_postgres_db(request.getfixturevalue("postgres_admin"))
            )
        srv = start_server(home, **env)
        stack.callback(srv.stop)
        yield srv


def assert_healthy(url: str) -> None:
    assert httpx.get(url + "/v2/health/live", timeout=10).status_code == 200
    assert httpx.get(url + "/v2/health/ready", timeout=10).status_code == 200


def raw_request(url: str, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send ``head`` (request line and headers, CRLF-separated, no final blank line) verbatim.

    For what httpx refuses to send: CR/LF inside header values, undecoded paths. Returns the
    status code and the whole answer (the connection is closed after one request).
    """
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + b"\r\nConnection: close\r\n\r\n" + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, answer


class Payload:
    """Unpickling this writes ``marker``: the proof that someone ran a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def malicious_pickle(marker: Path, protocol: int) -> bytes:
    return pickle.dumps(Payload(marker), protocol=protocol)


def torch_save_zip(marker: Path) -> bytes:
    """What ``torch.save`` writes (a zip whose ``archive/data.pkl`` is the pickle), with the payload in it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", malicious_pickle(marker, 2))
        z.writestr("archive/version", "3\n")
        z.writestr("archive/byteorder", "little")
    return buf.getvalue()


def tiny_onnx() -> bytes:
    """A valid ONNX model (y = x, float32 [N, 2]): what a model import accepts, so a refusal
    of it is the name's or the route's doing, not the file's."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


CSV = b"a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n"
"""A valid table upload."""
