"""Import a Hugging Face model folder as a model version; register any imported LLM or encoder.

The folder arrives as a zip or tar (``modelhost import ./folder`` packs it) and is read in memory by
the safe archive reader: nothing is extracted. It holds ``config.json``, the weights as ``*.safetensors``
(one file or shards), ``tokenizer.json``, and optionally ``tokenizer_config.json`` (chat template,
special tokens), ``chat_template.jinja``, ``generation_config.json``, and for a sentence-transformers
encoder ``modules.json`` with its modules' configs. Pickled weights (``pytorch_model.bin``, ``*.pt``, ...)
are refused, never opened.

``config.json``'s ``model_type`` picks the architecture: llama, mistral and qwen2 become ``llama``,
gpt2 ``gpt2`` (task ``language_model``), bert ``bert`` (task ``embedding``). A version holds
``modelhost.json``, ``weights.safetensors`` (the source's dtype, Hugging Face tensor names) and
``tokenizer.json``; the manifest config is the architecture's config plus, for language models,
``bos_token_id``, ``eos_token_ids`` (every id that ends a generation) and ``chat_template`` (or None).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.sandbox
import safetensors
import safetensors.torch
import torch
from sqlalchemy.orm import Session
from tokenizers import Tokenizer

from modelhost.artifacts import ArtifactStore
from modelhost.datasets.archives import read_archive
from modelhost.datasets.formats import detect_format
from modelhost.errors import InvalidInput, UnsafeContent
from modelhost.nn.bert import BertConfig, bert_from_hf
from modelhost.nn.gpt2 import GPT2Config, gpt2_shapes, gpt2_state_dict
from modelhost.nn.llama import HEAD_KEY, LlamaConfig, check_shapes, expected_shapes
from modelhost.registry.manifest import TOKENIZER_FILE, WEIGHTS_FILE, Manifest, Signature, TensorSpec
from modelhost.registry.service import ModelVersion, register_version
from modelhost.serving.embeddings import sentence_transformers_options

LLAMA_TYPES = ("llama", "mistral", "qwen2")
PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".dill")
_PICKLE_MAGIC = tuple(bytes([0x80, p]) for p in range(2, 6))
Task = Literal["language_model", "embedding"]


@dataclass
class ImportedModel:
    """A model read from a foreign format, ready to register: Hugging Face tensor names throughout."""

    architecture: str
    task: Task
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    tokenizer: Tokenizer


def register_imported(s: Session, store: ArtifactStore, name: str, model: ImportedModel) -> ModelVersion:
    """Register ``model`` as the next version of ``name``: manifest, weights and tokenizer."""
    if model.task == "language_model":
        vocab = int(model.config["vocab_size"])
        output = TensorSpec(name="logits", datatype="FP32", shape=[-1, -1, vocab])
    else:
        output = TensorSpec(name="embeddings", datatype="FP32", shape=[-1, int(model.config["hidden_size"])])
    signature = Signature(
        inputs=[TensorSpec(name="input_ids", datatype="INT64", shape=[-1, -1])], outputs=[output]
    )
    manifest = Manifest(
        architecture=model.architecture, config=model.config, task=model.task, signature=signature
    )
    weights = safetensors.torch.save({k: t.contiguous() for k, t in model.tensors.items()})
    files = {WEIGHTS_FILE: weights, TOKENIZER_FILE: model.tokenizer.to_str().encode()}
    return register_version(s, store, name, manifest, files)


def generation_config(
    tokenizer: Tokenizer, bos: int | str | None, eos: list[int | str], chat_template: str | None
) -> dict[str, Any]:
    """The manifest keys an LLM runtime needs besides the architecture: special ids and the template.

    Tokens may be given as ids or as their text; a text the tokenizer does not know is left out.
    Raises InvalidInput if the chat template is not valid Jinja.
    """

    def token_id(token: int | str | None) -> int | None:
        return token if isinstance(token, int) or token is None else tokenizer.token_to_id(token)

    if chat_template is not None:
        try:
            jinja2.sandbox.ImmutableSandboxedEnvironment().parse(chat_template)
        except jinja2.TemplateSyntaxError as e:
            raise InvalidInput(f"chat template: line {e.lineno}: {e.message}") from e
    eos_ids = [i for i in map(token_id, eos) if i is not None]
    return {
        "bos_token_id": token_id(bos),
        "eos_token_ids": list(dict.fromkeys(eos_ids)),  # unique, in order
        "chat_template": chat_template,
    }


def check_vocab(tokenizer: Tokenizer, vocab_size: int, where: str) -> None:
    """Refuse a tokenizer that can produce ids past the model's embedding table."""
    if (n := tokenizer.get_vocab_size(with_added_tokens=True)) > vocab_size:
        raise InvalidInput(
            f"{where}: the tokenizer has {n} tokens but the model's vocab_size is {vocab_size}"
        )


# --- the folder


class HFFolder:
    """The files of a model folder, by '/'-separated path relative to the folder."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files

    def json(self, path: str, required: bool = False) -> Any:
        if path not in self.files:
            if required:
                raise InvalidInput(f"the folder has no {path}; is it a Hugging Face model folder?")
            return None
        try:
            return json.loads(self.files[path])
        except ValueError as e:
            raise InvalidInput(f"{path} is not valid JSON: {e}") from e
        except RecursionError as e:  # json's decoder recurses: "[[[[..." a hundred thousand deep
            raise InvalidInput(f"{path}: JSON nested too deeply") from e

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of every top-level ``*.safetensors`` file (shards merged)."""
        shards = sorted(p for p in self.files if p.endswith(".safetensors") and "/" not in p)
        if not shards:
            raise InvalidInput("the folder has no *.safetensors weights; save them with save_pretrained()")
        tensors: dict[str, torch.Tensor] = {}
        for shard in shards:
            try:
                loaded = safetensors.torch.load(self.files[shard])
            except (safetensors.SafetensorError, ValueError, RuntimeError) as e:
                raise InvalidInput(f"{shard} is not a readable safetensors file: {e}") from e
            if twice := sorted(tensors.keys() & loaded.keys()):
                raise InvalidInput(f"{shard}: tensor {twice[0]!r} is also in another shard")
            tensors.update(loaded)
        return tensors

    def tokenizer(self) -> Tokenizer:
        if TOKENIZER_FILE not in self.files:
            raise InvalidInput("the folder has no tokenizer.json; save the tokenizer with save_pretrained()")
        try:
            return Tokenizer.from_str(self.files[TOKENIZER_FILE].decode())
        except Exception as e:  # tokenizers raises a bare Exception for a file it cannot read
            raise InvalidInput(f"tokenizer.json cannot be read: {e}") from e

    def chat_template(self) -> str | None:
        """``chat_template.jinja``, else ``tokenizer_config.json``'s ``chat_template`` (a string, or a
        list of named templates of which the one named "default" is used)."""
        if "chat_template.jinja" in self.files:
            return self.files["chat_template.jinja"].decode()
        template = (self.json("tokenizer_config.json") or {}).get("chat_template")
        if isinstance(template, list):
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        if template is not None and not isinstance(template, str):
            raise InvalidInput(
                "tokenizer_config.json: chat_template must be a string or a list of named ones"
            )
        return template


def folder_from_archive(data: bytes, filename: str) -> HFFolder:
    """The files of a zip or tar of a model folder. A single top-level directory (``tar -C parent dir``)
    is looked through. Raises UnsafeContent if any file is a pickle, whatever the rest holds."""
    kind = detect_format(filename)
    if kind not in ("zip", "tar"):
        raise InvalidInput(f"{filename!r}: a Hugging Face folder is uploaded as a .zip or .tar archive")
    members = read_archive(data, filename, kind)
    for m in members:
        name = m.path[-1].lower()
        # a safetensors header length can start with pickle's magic bytes; safetensors never runs code
        by_content = not name.endswith(".safetensors") and m.data.startswith(_PICKLE_MAGIC)
        if name.endswith(PICKLE_WEIGHTS) or by_content:
            raise UnsafeContent(
                f"{'/'.join(m.path)!r} is a pickle; modelhost never loads pickles. Save the weights as "
                "safetensors (save_pretrained(..., safe_serialization=True)) and leave this file out"
            )
    tops = {m.path[0] for m in members}
    if len(tops) == 1 and all(len(m.path) > 1 for m in members):
        members = [dataclasses.replace(m, path=m.path[1:]) for m in members]
    return HFFolder({"/".join(m.path): m.data for m in members})


def import_hf(s: Session, store: ArtifactStore, name: str, data: bytes, filename: str) -> ModelVersion:
    """Register a zip or tar of a Hugging Face model folder as the next version of ``name``.

    Raises UnsafeContent for a pickle anywhere in it, InvalidInput naming the file or config key
    for anything else it cannot import exactly.
    """
    try:
        imported = read_hf_folder(folder_from_archive(data, filename))
    except RecursionError as e:  # any other parser of the folder's files (templates, modules.json)
        raise InvalidInput(f"{filename!r}: a file in the folder is nested too deeply to read") from e
    return register_imported(s, store, name, imported)


def read_hf_folder(folder: HFFolder) -> ImportedModel:
    config = folder.json("config.json", required=True)
    if not isinstance(config, dict):
        raise InvalidInput("config.json must be a JSON object")
    model_type = config.get("model_type")
    if model_type in LLAMA_TYPES:
        return _llama(folder, config)
    if model_type == "gpt2":
        return _gpt2(folder, config)
    if model_type == "bert":
        return _bert(folder, config)
    raise InvalidInput(
        f"config.json: model_type {model_type!r} is not supported; "
        f"imported folders are {', '.join(LLAMA_TYPES)} (Llama family), gpt2 or bert"
    )


def _llama(folder: HFFolder, hf: dict[str, Any]) -> ImportedModel:
    try:
        config = LlamaConfig.from_hf(hf)
    except (ValueError, TypeError, KeyError) as e:
        raise InvalidInput(f"config.json: {e}") from e
    tensors = {k: t for k, t in folder.tensors().items() if not k.endswith("rotary_emb.inv_freq")}
    if config.tie_word_embeddings:
        tensors.pop(HEAD_KEY, None)  # some files keep the tied copy; the model shares one tensor
    return _language_model(folder, hf, "llama", config, expected_shapes(config), tensors)


def _gpt2(folder: HFFolder, hf: dict[str, Any]) -> ImportedModel:
    try:
        config = GPT2Config.from_hf(hf)
    except (ValueError, TypeError) as e:
        raise InvalidInput(f"config.json: {e}") from e
    tensors = gpt2_state_dict(folder.tensors())
    return _language_model(folder, hf, "gpt2", config, gpt2_shapes(config), tensors)


def _language_model(
    folder: HFFolder,
    hf: dict[str, Any],
    architecture: str,
    config: Any,
    expected: dict[str, tuple[int, ...]],
    tensors: dict[str, torch.Tensor],
) -> ImportedModel:
    """Check the tensors against the architecture's, read the tokenizer and the generation settings."""
    try:
        check_shapes(expected, {k: tuple(t.shape) for k, t in tensors.items()})
    except ValueError as e:
        raise InvalidInput(f"*.safetensors: {e}") from e
    tokenizer = folder.tokenizer()
    check_vocab(tokenizer, config.vocab_size, "tokenizer.json")
    tokens = folder.json("tokenizer_config.json") or {}
    generation = folder.json("generation_config.json") or {}
    eos: list[int | str] = []
    for source in (
        generation.get("eos_token_id"),
        hf.get("eos_token_id"),
        _token_text(tokens.get("eos_token")),
    ):
        eos += source if isinstance(source, list) else [source] if source is not None else []
    bos = next(
        (b for b in (generation.get("bos_token_id"), hf.get("bos_token_id")) if b is not None),
        _token_text(tokens.get("bos_token")),
    )
    settings = generation_config(tokenizer, bos, eos, folder.chat_template())
    full = {**dataclasses.asdict(config), "model_type": hf["model_type"], **settings}
    return ImportedModel(architecture, "language_model", full, tensors, tokenizer)


def _token_text(token: Any) -> str | None:
    """A tokenizer_config special token: a string, or an AddedToken dict with its ``content``."""
    return token.get("content") if isinstance(token, dict) else token if isinstance(token, str) else None


def _bert(folder: HFFolder, hf: dict[str, Any]) -> ImportedModel:
    config, state = bert_from_hf(hf, folder.tensors())
    with tempfile.TemporaryDirectory() as tmp:  # it reads a directory: give it the folder's JSON only
        for path, data in folder.files.items():
            if path.endswith(".json"):  # paths were checked by the archive reader: no '..', not absolute
                (Path(tmp) / path).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / path).write_bytes(data)
        config.update(sentence_transformers_options(Path(tmp)))
    try:
        BertConfig(**config)  # the folder's options must suit the model too (max_length <= positions)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"sentence-transformers options: {e}") from e
    tokenizer = folder.tokenizer()
    check_vocab(tokenizer, int(config["vocab_size"]), "tokenizer.json")
    return ImportedModel("bert", "embedding", config, state, tokenizer)
