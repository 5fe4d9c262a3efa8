"""Import a GGUF file (llama.cpp's format) as a language-model version of architecture ``llama``.

Read with the ``gguf`` package: the metadata becomes a :class:`LlamaConfig`, every tensor is
dequantised to float32 by gguf's own numpy code (F32, F16, BF16, Q8_0, Q4_0, Q4_1 and the other types
it reads) and renamed to Hugging Face's names, and llama.cpp's reordering of the query and key rows
(for its interleaved rotary layout) is undone, exactly as transformers does when it loads a GGUF. The
tokenizer is rebuilt as a ``tokenizers`` JSON from the vocabulary in the metadata: byte-level BPE
(``tokenizer.ggml.model`` "gpt2") or SentencePiece-style BPE with byte fallback ("llama"), built the
way transformers builds it, so both tokenise alike. The chat template is ``tokenizer.chat_template``.

The result is registered like a Hugging Face folder (:func:`modelhost.registry.hf_import.register_imported`),
with float32 weights.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import gguf
import numpy as np
import torch
from sqlalchemy.orm import Session
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from modelhost.artifacts import ArtifactStore
from modelhost.errors import InvalidInput, UnsafeContent
from modelhost.nn.llama import LlamaConfig, check_tensors
from modelhost.registry.hf_import import ImportedModel, check_vocab, generation_config, register_imported
from modelhost.registry.service import ModelVersion

ARCHITECTURES = ("llama", "qwen2")  # llama.cpp's names; Mistral GGUFs say "llama"
_MAGIC = b"GGUF"
_READ_ERRORS = (ValueError, IndexError, KeyError, TypeError, OverflowError, EOFError, RecursionError)
"""What gguf's reader raises on a damaged file (RecursionError: arrays of arrays nested deep)."""

_NAMES = {  # GGUF tensor name -> Hugging Face's; {} is the layer number
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{}.attn_norm.weight": "model.layers.{}.input_layernorm.weight",
    "blk.{}.ffn_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
    "blk.{}.ffn_gate.weight": "model.layers.{}.mlp.gate_proj.weight",
    "blk.{}.ffn_up.weight": "model.layers.{}.mlp.up_proj.weight",
    "blk.{}.ffn_down.weight": "model.layers.{}.mlp.down_proj.weight",
    **{
        f"blk.{{}}.attn_{g}.{kind}": f"model.layers.{{}}.self_attn.{h}_proj.{kind}"
        for g, h in (("q", "q"), ("k", "k"), ("v", "v"), ("output", "o"))
        for kind in ("weight", "bias")
    },
}
_LAYER = re.compile(r"blk\.(\d+)\.")

# Byte-level pre-tokenizer splits by tokenizer.ggml.pre, as transformers reads them; other values
# (gpt2, smollm, ...) keep GPT-2's own split.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPLITS = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "smaug-bpe", "dbrx", "falcon3"), _LLAMA3_SPLIT),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "megrez"), _QWEN2_SPLIT),
}
_CONTROL, _USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values


def import_gguf(s: Session, store: ArtifactStore, name: str, data: bytes, filename: str) -> ModelVersion:
    """Register ``data`` (a GGUF file) as the next version of ``name``.

    Raises UnsafeContent for a pickle, InvalidInput naming the metadata key or tensor for a file
    that is not a GGUF of a supported architecture, tokenizer and tensor type.
    """
    if data[:2] in (bytes([0x80, p]) for p in range(2, 6)):
        raise UnsafeContent(f"{filename!r} is a pickle, not a GGUF file; modelhost never loads pickles")
    if data[:4] != _MAGIC:
        raise InvalidInput(f"{filename!r} is not a GGUF file (it does not start with 'GGUF')")
    # gguf maps files: hand it an anonymous temporary one (no name of the user's touches the disk)
    with tempfile.TemporaryFile(suffix=".gguf") as f:
        f.write(data)
        f.flush()
        imported = read_gguf(f, filename)
    return register_imported(s, store, name, imported)


def read_gguf(source: str | IO[bytes], filename: str = "model.gguf") -> ImportedModel:
    """The model in a GGUF file (a path, or an open file that can be memory-mapped)."""
    try:
        reader = gguf.GGUFReader(source)  # type: ignore[arg-type]  # np.memmap takes open files too
        meta = {name: field.contents() for name, field in reader.fields.items()}
    except _READ_ERRORS as e:
        raise InvalidInput(f"{filename!r} is not a readable GGUF file (truncated or damaged: {e})") from e
    config = gguf_config(meta, {t.name for t in reader.tensors})
    try:
        tensors = dict(_tensors(reader, meta["general.architecture"], config))
    except _READ_ERRORS as e:
        raise InvalidInput(f"{filename!r}: the tensor data cannot be read: {e}") from e
    try:
        check_tensors(config, {k: tuple(t.shape) for k, t in tensors.items()})
    except ValueError as e:
        raise InvalidInput(f"{filename!r}: {e}") from e
    tokenizer = gguf_tokenizer(meta)
    check_vocab(tokenizer, config.vocab_size, filename)
    eos = [meta[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id") if k in meta]
    settings = generation_config(
        tokenizer, meta.get("tokenizer.ggml.bos_token_id"), eos, meta.get("tokenizer.chat_template")
    )
    full = {**dataclasses.asdict(config), "model_type": meta["general.architecture"], **settings}
    return ImportedModel("llama", "language_model", full, tensors, tokenizer)


def gguf_config(meta: dict[str, Any], tensor_names: set[str]) -> LlamaConfig:
    """The LlamaConfig the metadata describes. Raises InvalidInput naming the key it cannot use."""
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise InvalidInput(
            f"general.architecture {arch!r} is not supported; GGUF imports read {', '.join(ARCHITECTURES)}"
        )

    def get(key: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise InvalidInput(f"the GGUF metadata lacks {arch}.{key}")
        return value

    if "rope_freqs.weight" in tensor_names:
        raise InvalidInput("rope_freqs.weight (Llama 3.1 frequency factors) is not supported in GGUF imports")
    kv_heads = get("attention.head_count_kv", get("attention.head_count"))
    if isinstance(kv_heads, list):
        raise InvalidInput(f"{arch}.attention.head_count_kv differs by layer; that is not a Llama model")
    try:
        config = LlamaConfig(
            vocab_size=int(meta.get(f"{arch}.vocab_size") or len(meta.get("tokenizer.ggml.tokens", []))),
            hidden_size=int(get("embedding_length")),
            intermediate_size=int(get("feed_forward_length")),
            num_hidden_layers=int(get("block_count")),
            num_attention_heads=int(get("attention.head_count")),
            num_key_value_heads=int(kv_heads),
            head_dim=int(get("attention.key_length", 0)),
            max_position_embeddings=int(get("context_length", 2048)),
            rms_norm_eps=float(get("attention.layer_norm_rms_epsilon")),
            rope_theta=float(get("rope.freq_base", 10000.0)),
            rope_scaling=_rope_scaling(meta, arch),
            tie_word_embeddings="output.weight" not in tensor_names,
            qkv_bias="blk.0.attn_q.bias" in tensor_names,
            o_bias="blk.0.attn_output.bias" in tensor_names,
        )
    except (ValueError, TypeError) as e:
        raise InvalidInput(f"GGUF metadata: {e}") from e
    if int(get("rope.dimension_count", config.head_dim)) != config.head_dim:
        raise InvalidInput(f"{arch}.rope.dimension_count: partial rotary embeddings are not supported")
    return config


def _rope_scaling(meta: dict[str, Any], arch: str) -> dict[str, Any]:
    kind = meta.get(f"{arch}.rope.scaling.type", "none")
    if kind == "none":
        return {}
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(meta[f"{arch}.rope.scaling.factor"])}
    if kind == "yarn":
        return {
            "rope_type": "yarn",
            "factor": float(meta[f"{arch}.rope.scaling.factor"]),
            "original_max_position_embeddings": int(meta[f"{arch}.rope.scaling.original_context_length"]),
        }
    raise InvalidInput(f"{arch}.rope.scaling.type {kind!r} is not supported (none, linear, yarn)")


def _tensors(reader: gguf.GGUFReader, arch: str, config: LlamaConfig) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor, dequantised to float32, by Hugging Face name, with q and k rows in HF's order."""
    for t in reader.tensors:
        pattern = _LAYER.sub("blk.{}.", t.name)
        if pattern not in _NAMES:
            raise InvalidInput(f"tensor {t.name!r} is not part of a {arch} model")
        layer = m.group(1) if (m := _LAYER.match(t.name)) else ""
        try:
            weights = gguf.dequantize(t.data, t.tensor_type)
        except NotImplementedError as e:
            raise InvalidInput(f"tensor {t.name!r}: {t.tensor_type.name} cannot be dequantised: {e}") from e
        if np.may_share_memory(weights, reader.data):  # F32 comes back as a view of the mapped file
            weights = weights.copy()
        weights = weights.astype(np.float32, copy=False)
        if arch == "llama" and ".attn_q." in t.name:
            weights = _unpermute(weights, config.num_attention_heads)
        elif arch == "llama" and ".attn_k." in t.name:
            weights = _unpermute(weights, config.num_key_value_heads)
        yield _NAMES[pattern].format(layer), torch.from_numpy(np.ascontiguousarray(weights))


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's convert script, which interleaves each head's two rotary halves."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# --- the tokenizer


def gguf_tokenizer(meta: dict[str, Any]) -> Tokenizer:
    """A ``tokenizers`` Tokenizer for the vocabulary in the metadata, as transformers builds it."""
    kind = meta.get("tokenizer.ggml.model")
    if "tokenizer.ggml.tokens" not in meta:
        raise InvalidInput("the GGUF metadata has no tokenizer.ggml.tokens: the file carries no tokenizer")
    if kind == "gpt2":
        tokenizer = _byte_level(meta)
    elif kind == "llama":
        tokenizer = _sentencepiece(meta)
    else:
        raise InvalidInput(
            f"tokenizer.ggml.model {kind!r} is not supported; GGUF imports read 'gpt2' (byte-level BPE) "
            "and 'llama' (SentencePiece BPE) vocabularies"
        )
    _add_marked_tokens(tokenizer, meta, byte_level=kind == "gpt2")
    return tokenizer


def _merges(meta: dict[str, Any]) -> list[tuple[str, str]]:
    if "tokenizer.ggml.merges" in meta:
        pairs = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
        if bad := next((p for p in pairs if len(p) != 2), None):
            raise InvalidInput(f"tokenizer.ggml.merges: {' '.join(bad)!r} is not two tokens")
        return pairs
    return _merges_from_scores(meta["tokenizer.ggml.tokens"], meta.get("tokenizer.ggml.scores"))


def _merges_from_scores(tokens: list[str], scores: list[float] | None) -> list[tuple[str, str]]:
    """SentencePiece files list no merges: every split of a token into two known tokens is one, ranked by
    the merged token's score (best first), as transformers' ``generate_merges`` ranks them."""
    vocab = {t: i for i, t in enumerate(tokens)}
    if scores is None:
        raise InvalidInput("the GGUF tokenizer has neither tokenizer.ggml.merges nor tokenizer.ggml.scores")
    found: list[tuple[str, str, float]] = []
    for token, score in zip(tokens, scores, strict=True):
        local = [
            (token[:i], token[i:], score)
            for i in range(1, len(token))
            if token[:i] in vocab and token[i:] in vocab
        ]
        found += sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]]))
    found.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(a, b) for a, b, _ in found]


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable spelling of the 256 bytes."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = (b for b in range(256) if b not in keep)
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + i) for i, b in enumerate(extra)}}


def _byte_level(meta: dict[str, Any]) -> Tokenizer:
    spelling = _byte_to_unicode()
    alphabet = set(spelling.values())
    vocab = {  # tokens outside the byte alphabet (rare mislabels) are spelled in it, as transformers does
        t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode()): i
        for i, t in enumerate(meta["tokenizer.ggml.tokens"])
    }
    tokenizer = Tokenizer(models.BPE(vocab, _merges(meta), fuse_unk=False, byte_fallback=False))
    split = SPLITS.get(meta.get("tokenizer.ggml.pre", ""))
    if split is None:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer  # no BOS added: transformers adds none to byte-level vocabularies either


def _sentencepiece(meta: dict[str, Any]) -> Tokenizer:
    tokens = meta["tokenizer.ggml.tokens"]
    vocab = {t: i for i, t in enumerate(tokens)}
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[unk_id] if isinstance(unk_id, int) and 0 <= unk_id < len(tokens) else None
    tokenizer = Tokenizer(models.BPE(vocab, _merges(meta), unk_token=unk, fuse_unk=True, byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    bos_id = meta.get("tokenizer.ggml.bos_token_id")
    if (
        meta.get("tokenizer.ggml.add_bos_token", True)
        and isinstance(bos_id, int)
        and 0 <= bos_id < len(tokens)
    ):
        bos = tokens[bos_id]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)]
        )
    return tokenizer


def _add_marked_tokens(tokenizer: Tokenizer, meta: dict[str, Any], byte_level: bool) -> None:
    """Tokens the file marks control (``<|im_end|>``) become special tokens and user-defined ones
    (``<think>``) plain added tokens, so both stay whole in text. In a byte-level vocabulary a control
    token spelled outside the byte alphabet is a mislabel and is skipped, as transformers skips it."""
    types = meta.get("tokenizer.ggml.token_type") or []
    alphabet = set(_byte_to_unicode().values())
    tokens = meta["tokenizer.ggml.tokens"]
    control = [
        AddedToken(t, normalized=False, special=True)
        for t, kind in zip(tokens, types, strict=False)
        if kind == _CONTROL and (not byte_level or set(t) <= alphabet)
    ]
    user = [
        AddedToken(t, normalized=False, special=False)
        for t, kind in zip(tokens, types, strict=False)
        if kind == _USER_DEFINED
    ]
    tokenizer.add_special_tokens(control)
    tokenizer.add_tokens(user)
