"""Sentence embeddings from a BERT encoder: texts in, float32 ``(N, D)`` vectors and token counts out.

The piece ``/v1/embeddings`` calls. Texts are tokenised with the model's own ``tokenizer.json``
(truncated to the model's ``max_length``, [CLS]/[SEP] included), grouped by length so that each batch
holds texts of similar length and pads little, encoded at most ``batch_size`` at a time under
``torch.inference_mode``, and returned in the order given. Padding changes no text's vector (the
encoder masks it), so the batching is invisible in the result up to float rounding.

``sentence_transformers_options`` reads what a sentence-transformers folder adds to a BERT checkpoint
(pooling, normalisation, max_seq_length), for the Hugging Face importer to merge into the config
``bert_from_hf`` returns.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from modelhost.errors import InvalidInput
from modelhost.nn.bert import Bert


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray
    """(N, D) float32, row i the embedding of text i."""
    token_counts: list[int]
    """Tokens each text was encoded as, after truncation, special tokens included."""

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts)


class Embedder:
    """Embeds texts with ``model`` and the ``tokenizer`` it was trained with.

    ``embed`` is thread-compatible, not thread-safe: callers serialise it (one runtime thread).
    The tokenizer is copied, so the caller's keeps its own truncation and padding settings.
    """

    def __init__(self, model: Bert, tokenizer: Tokenizer, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model.eval()
        self.batch_size = batch_size
        self.max_length = model.config.max_length
        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self.tokenizer.no_padding()  # we pad per batch, to that batch's longest text
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self._pad_id = model.config.pad_token_id
        self._device = next(model.parameters()).device

    @property
    def dimension(self) -> int:
        return self.model.config.hidden_size

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text as the encoder sees them; InvalidInput names an item that is no string."""
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInput(f"input[{i}] must be a string, got {type(text).__name__}")
        return [enc.ids for enc in self.tokenizer.encode_batch(list(texts))]

    def embed(self, texts: Sequence[str]) -> Embeddings:
        ids = self.tokenize(texts)
        vectors = np.empty((len(ids), self.dimension), dtype=np.float32)
        with torch.inference_mode():
            for rows in self._batches([len(x) for x in ids]):
                input_ids, mask = self._pad([ids[i] for i in rows])
                vectors[rows] = self.model(input_ids, mask).float().cpu().numpy()
        return Embeddings(vectors, [len(x) for x in ids])

    def _batches(self, lengths: list[int]) -> Iterator[list[int]]:
        """Indices of texts to encode together, longest first: at most ``batch_size`` texts, none
        shorter than half the batch's longest, so padding at most doubles a batch's work."""
        batch: list[int] = []
        for i in sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True):
            if batch and (len(batch) == self.batch_size or 2 * lengths[i] < lengths[batch[0]]):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    def _pad(self, batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) ids padded on the right to the longest, and the (B, T) mask of real tokens."""
        longest = max(len(x) for x in batch)
        ids = np.full((len(batch), longest), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), longest), dtype=np.int64)
        for row, x in enumerate(batch):
            ids[row, : len(x)] = x
            mask[row, : len(x)] = 1
        return torch.from_numpy(ids).to(self._device), torch.from_numpy(mask).to(self._device)


def sentence_transformers_options(model_dir: Path) -> dict[str, Any]:
    """``BertConfig`` overrides from a sentence-transformers folder: pooling, normalize, max_length.

    ``{}`` for a folder without ``modules.json`` (a plain BERT keeps mean pooling over all its
    positions, unnormalised). Reads ``modules.json``, the Pooling module's ``config.json`` and the
    Transformer module's ``sentence_bert_config.json``; module paths must stay inside ``model_dir``.
    Raises InvalidInput naming the file when the pipeline has a step this encoder does not compute
    (a Dense layer, max pooling, ...), so an import never serves vectors that differ from the model's.
    """
    modules = _read_json(model_dir, "", "modules.json")
    if modules is None:
        return {}
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise InvalidInput("modules.json must be a list of objects")
    options: dict[str, Any] = {"normalize": False}
    for module in modules:
        kind, path = str(module.get("type", "")).rpartition(".")[2], str(module.get("path", ""))
        if kind == "Transformer":
            max_seq_length = (_read_json(model_dir, path, "sentence_bert_config.json") or {}).get(
                "max_seq_length"
            )
            if max_seq_length is not None and not isinstance(max_seq_length, int):
                raise InvalidInput(
                    f"sentence_bert_config.json: max_seq_length must be an integer, got {max_seq_length!r}"
                )
            if max_seq_length is not None:
                options["max_length"] = max_seq_length
        elif kind == "Pooling":
            options["pooling"] = _pooling_mode(_read_json(model_dir, path, "config.json") or {})
        elif kind == "Normalize":
            options["normalize"] = True
        else:
            raise InvalidInput(
                f"modules.json: module {module.get('type')!r} is not supported "
                "(only Transformer, Pooling and Normalize)"
            )
    return options


_LEGACY_POOLING = {  # sentence-transformers 2's flags and the mode each names
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def _pooling_mode(config: dict[str, Any]) -> str:
    mode = config.get("pooling_mode")
    if mode is None:  # sentence-transformers 2: one flag per mode; none set means mean
        modes = [name for flag, name in _LEGACY_POOLING.items() if config.get(flag)] or ["mean"]
        mode = modes[0] if len(modes) == 1 else modes
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    if mode not in ("mean", "cls"):
        raise InvalidInput(
            f"Pooling config.json: pooling_mode {mode!r} is not supported (only 'mean' or 'cls')"
        )
    return str(mode)


def _read_json(model_dir: Path, module_path: str, name: str) -> Any:
    """The parsed file, or None if it does not exist; ``module_path`` comes from modules.json, so it
    is checked to name a folder inside ``model_dir`` before it reaches the filesystem."""
    rel = PurePosixPath(module_path)
    if rel.is_absolute() or ".." in rel.parts or "\\" in module_path:
        raise InvalidInput(f"modules.json: path {module_path!r} leaves the model folder")
    root = model_dir.resolve()
    file = (root / rel / name).resolve()
    if not file.is_relative_to(root):  # a symlink out of the folder
        raise InvalidInput(f"modules.json: {(rel / name).as_posix()!r} leaves the model folder")
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInput(f"{(rel / name).as_posix()} is not valid JSON: {e}") from e
