"""What the LLM tests share: small model shapes, tokenizers trained here on a multilingual corpus, and
small GGUF files written the way llama.cpp's convert script writes them (q and k rows permuted for llama,
2-D weights quantised to the type asked for, norms and biases kept F32, the vocabulary as metadata)."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs on.",
    "Le renard brun saute par-dessus le chien paresseux. Crème brûlée, déjà vu, où est-il ?",
    "Der schnelle braune Fuchs springt über den faulen Hund. Grüße aus München!",
    "快速的棕色狐狸跳过了懒狗。你好，世界。",  # noqa: RUF001 (Chinese punctuation)
    "def add(a, b):\n    return a + b  # sum\n\nprint(add(2, 3))",
    "emoji 🤖🎉 and numbers 12345 67890 in 2024.",
]
TEXT = "The fox says: Grüße, crème brûlée! 你好 🤖 def f(x):\n    return x * 2  # ok\n  <|im_end|>"
SMALL = dict(  # every model in these tests: transformers' config keys, vocab_size aside
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)
SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
_GGUF_NAMES = {
    "embed_tokens": "token_embd",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def train_tokenizer(kind: str, vocab_size: int = 400) -> Tokenizer:
    """A byte-level BPE ("gpt2") or a SentencePiece-style BPE with byte fallback ("llama")."""
    if kind == "gpt2":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        specials = SPECIALS
    else:
        tok = Tokenizer(models.BPE(byte_fallback=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        alphabet = []
        specials = SPECIALS + [f"<0x{b:02X}>" for b in range(256)]  # byte fallback's tokens
        vocab_size += 256
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet)
    tok.train_from_iterator(CORPUS, trainer)
    tok.decoder = decoders.ByteLevel() if kind == "gpt2" else decoders.Metaspace()
    return tok


def tiny_model(arch: str, vocab_size: int, tied: bool) -> torch.nn.Module:
    """A transformers Llama or Qwen2 of SMALL shape with random (seeded) weights."""
    torch.manual_seed(0)
    common = dict(
        **SMALL,
        vocab_size=vocab_size,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tied,
        bos_token_id=1,
        eos_token_id=4,
    )
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common, rope_theta=1e6)).eval()
    return LlamaForCausalLM(LlamaConfig(**common, rope_theta=5e5)).eval()


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf ``LlamaModel.permute``."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(hf_name: str) -> str:
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    name = hf_name.removeprefix("model.").replace("layers.", "blk.")
    for hf, gg in _GGUF_NAMES.items():
        name = name.replace(hf, gg)
    return name


def write_gguf(
    path: Path, model: torch.nn.Module, tokenizer: Tokenizer, kind: str, qtype: gguf.GGMLQuantizationType
) -> None:
    """Write ``model`` and ``tokenizer`` as llama.cpp would (``kind``: the tokenizer's ggml model)."""
    c = model.config
    arch = c.model_type
    w = gguf.GGUFWriter(path, arch)
    w.add_name("tiny test model")
    for key, value in {
        "context_length": c.max_position_embeddings,
        "embedding_length": c.hidden_size,
        "feed_forward_length": c.intermediate_size,
        "block_count": c.num_hidden_layers,
        "attention.head_count": c.num_attention_heads,
        "attention.head_count_kv": c.num_key_value_heads,
        "rope.dimension_count": c.hidden_size // c.num_attention_heads,
        "vocab_size": c.vocab_size,
    }.items():
        w.add_uint32(f"{arch}.{key}", value)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", c.rms_norm_eps)
    w.add_float32(f"{arch}.rope.freq_base", c.rope_parameters["rope_theta"])
    _write_tokenizer(w, tokenizer, kind)
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        a = t.numpy()
        if arch == "llama" and "q_proj" in name:
            a = _permute(a, c.num_attention_heads)
        elif arch == "llama" and "k_proj" in name:
            a = _permute(a, c.num_key_value_heads)
        if a.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
            w.add_tensor(gguf_name(name), gguf.quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(gguf_name(name), a.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _write_tokenizer(w: gguf.GGUFWriter, tokenizer: Tokenizer, kind: str) -> None:
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    w.add_tokenizer_model(kind)
    w.add_token_list(tokens)
    types = [
        3 if t in SPECIALS[1:] else 2 if t == "<unk>" else 6 if t.startswith("<0x") else 1 for t in tokens
    ]
    w.add_token_types(types)
    if kind == "gpt2":
        w.add_tokenizer_pre("qwen2")
        w.add_token_merges([" ".join(m) for m in json.loads(tokenizer.to_str())["model"]["merges"]])
    else:  # SentencePiece files carry scores, not merges: later tokens score lower
        w.add_token_scores([0.0 if ty != 1 else -float(i) for i, ty in enumerate(types)])
        w.add_add_bos_token(True)
    w.add_bos_token_id(vocab["<s>"])
    w.add_eos_token_id(vocab["<|im_end|>"])
    w.add_unk_token_id(vocab["<unk>"])
    w.add_chat_template(TEMPLATE)
