"""Attack item 6: the server never fetches a URL it is given (SSRF).

A listener on loopback records every connection it gets. Its URL (and ``file://``, ``ftp://``,
scheme-relative and credential-smuggling spellings) is sent in every field that could take one —
dataset names, sources, file names and formats, model names and import file names, config and
tokenizer files inside an imported folder, GGUF metadata, run and sweep specs, deployment
targets, alias and key names, inference inputs, OpenAI image and model fields. Each is refused or
treated as a plain name; the listener must not see a single connection.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from tests.security.malformed import STRING, gguf, zipped
from tests.security.support import CSV, Target, admin, assert_healthy, target, tiny_onnx

pytestmark = pytest.mark.slow
__all__ = ["admin", "target"]  # fixtures, imported for pytest


class Listener:
    """A TCP listener on loopback that counts the connections it accepts (and answers none)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=5)

    def urls(self) -> list[str]:
        at = f"127.0.0.1:{self.port}"
        return [
            f"http://{at}/data.csv",
            f"https://{at}/model.onnx",
            f"http://localhost:{self.port}/x",
            f"//{at}/x",
            f"ftp://{at}/x",
            f"http://user:pass@{at}/x",
            f"http://evil@{at}/x.csv",
            f"gopher://{at}/_x",
            "file:///etc/passwd",
        ]


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    lst = Listener()
    probe = socket.create_connection(("127.0.0.1", lst.port), timeout=5)  # it does count
    probe.close()
    for _ in range(100):
        if lst.connections:
            break
        threading.Event().wait(0.01)
    assert lst.connections == 1
    lst.connections = 0
    yield lst
    lst.close()


def not_fetched(r: httpx.Response, what: object, listener: Listener) -> None:
    assert r.status_code < 500, (what, r.status_code, r.text)
    assert listener.connections == 0, (what, "the server connected to the URL")


def test_dataset_fields(target: Target, admin: httpx.Client, listener: Listener) -> None:
    for i, url in enumerate(listener.urls()):
        for form in (
            {"name": url},
            {"name": f"t{i}a", "target": url},
            {"name": f"t{i}b", "format": url},
            {"name": f"t{i}c", "description": url},  # free text: stored, never followed
        ):
            r = admin.post("/api/v1/datasets", data=form, files={"file": ("t.csv", CSV)})
            not_fetched(r, form, listener)
        r = admin.post("/api/v1/datasets", data={"name": f"u{i}"}, files={"file": (url, b"")})
        not_fetched(r, ("empty file named", url), listener)
        assert r.status_code == 400
        r = admin.post("/api/v1/datasets", data={"name": f"v{i}"}, files={"file": (url + ".csv", CSV)})
        not_fetched(r, ("file named", url), listener)  # a name: its suffix says CSV, the bytes are read
        not_fetched(admin.post("/api/v1/datasets/samples/iris", json={"name": url}), url, listener)
        not_fetched(admin.post(f"/api/v1/datasets/samples/{quote(url, safe='')}"), url, listener)
        not_fetched(admin.post("/api/v1/datasets", json={"name": f"w{i}", "url": url}), url, listener)


def test_model_import_fields(target: Target, admin: httpx.Client, listener: Listener) -> None:
    for i, url in enumerate(listener.urls()):
        r = admin.post(
            f"/api/v1/models/{quote(url, safe='')}/import", files={"file": ("m.onnx", tiny_onnx())}
        )
        not_fetched(r, url, listener)
        for filename in (url, url + ".onnx", url + ".gguf", url + ".zip"):
            r = admin.post(f"/api/v1/models/imp{i}/import", files={"file": (filename, b"")})
            not_fetched(r, filename, listener)
            assert r.status_code in (400, 422), r.text
        config = {"model_type": "llama", "_name_or_path": url, "auto_map": {"AutoModel": url}}
        folder = {
            "config.json": json.dumps(config),
            "tokenizer_config.json": json.dumps({"tokenizer_file": url, "chat_template": url}),
            "modules.json": json.dumps([{"idx": 0, "name": "0", "path": url, "type": url}]),
            "tokenizer.json": json.dumps({"model": {"vocab": url}}),
            "model.safetensors.index.json": json.dumps({"weight_map": {"w": url}}),
        }
        r = admin.post(f"/api/v1/models/hf{i}/import", files={"file": ("f.zip", zipped(folder))})
        not_fetched(r, ("HF folder", url), listener)
        assert r.status_code == 400, r.text
        meta = [("general.architecture", STRING, "llama"), ("general.source.url", STRING, url)]
        r = admin.post(f"/api/v1/models/gg{i}/import", files={"file": ("m.gguf", gguf(meta=meta))})
        not_fetched(r, ("GGUF metadata", url), listener)
        assert r.status_code == 400, r.text


def test_spec_and_deployment_fields(target: Target, admin: httpx.Client, listener: Listener) -> None:
    r = admin.post("/api/v1/models/m/import", files={"file": ("m.onnx", tiny_onnx())})
    assert r.status_code == 201, r.text
    assert admin.put("/api/v1/deployments/d", json={"model": "m", "version": 1}).status_code == 201
    for url in listener.urls():
        base = {"dataset": "t0c", "target": "label", "epochs": 1}
        for spec in (
            {**base, "dataset": url},
            {**base, "register_as": url},
            {**base, "name": url},
            {**base, "model": {"architecture": url}},
            {**base, "init_from": url},
            {**base, "model": {"architecture": "mlp", "pretrained": url}},
        ):
            not_fetched(admin.post("/api/v1/runs", json=spec), spec, listener)
            sweep = {**spec, "sweep": {"method": "grid", "parameters": {"optimizer.lr": [0.1]}}}
            not_fetched(admin.post("/api/v1/sweeps", json=sweep), sweep, listener)
        for body in ({"model": url}, {"model": "m", "version": url}, {"model": "m", "shadow": url}):
            not_fetched(admin.put("/api/v1/deployments/x", json=body), body, listener)
        not_fetched(admin.post("/api/v1/deployments", json={"name": url, "model": "m"}), url, listener)
        not_fetched(
            admin.put(f"/api/v1/models/m/aliases/{quote(url, safe='')}", json={"version": 1}), url, listener
        )
        not_fetched(admin.post("/api/v1/keys", json={"name": url, "role": "viewer"}), url, listener)


def test_inference_fields(target: Target, admin: httpx.Client, listener: Listener) -> None:
    for url in listener.urls():
        for body in ({"instances": [url]}, {"instances": [[url, url]]}, {"instances": [{"url": url}]}):
            not_fetched(admin.post("/v1/models/d:predict", json=body), body, listener)
        oip = {
            "inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [url]}],
            "parameters": {"url": url},
        }
        not_fetched(admin.post("/v2/models/d/infer", json=oip), oip, listener)
        image = [{"type": "image_url", "image_url": {"url": url}}, {"type": "input_audio", "url": url}]
        chat = {"model": "d", "messages": [{"role": "user", "content": image}]}
        not_fetched(admin.post("/v1/chat/completions", json=chat), chat, listener)
        not_fetched(admin.post("/v1/chat/completions", json={**chat, "model": url}), url, listener)
        not_fetched(admin.post("/v1/completions", json={"model": url, "prompt": url}), url, listener)
        not_fetched(admin.post("/v1/embeddings", json={"model": url, "input": url}), url, listener)
        not_fetched(admin.get(f"/v1/models/{quote(url, safe='')}"), url, listener)
    assert_healthy(target.url)
    assert listener.connections == 0
