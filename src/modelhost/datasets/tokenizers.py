"""Text preprocessing: a tokeniser fitted on the training texts, saved in the manifest as JSON.

Two kinds, with the same special tokens at the same ids (``<pad>`` 0, ``<unk>`` 1, ``<bos>`` 2,
``<eos>`` 3):

- ``char``: one token per Unicode code point seen in training (the most frequent ones when
  ``vocab_size`` caps them); an unseen code point is ``<unk>``. Encoding is a vectorised numpy
  lookup (a megabyte in milliseconds), and ``decode(encode(t)) == t`` for text of seen characters.
- ``bpe``: byte-level BPE trained by the ``tokenizers`` library (Rust), saved as its own JSON
  (the version ships the same text as ``tokenizer.json``). Its alphabet is all 256 bytes, so
  any text encodes without ``<unk>`` and decodes back exactly.

Text is always text: ``"<eos>"`` typed into a prompt encodes as five characters, never as the
end-of-sequence id (``tokenizers`` would match it as a special token; that is switched off).
``encode`` adds no special tokens; ``decode`` drops them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from modelhost.errors import InvalidInput

TokenizerKind = Literal["char", "bpe"]
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
_BYTES = 256  # byte-level BPE starts from every byte
DEFAULT_BPE_VOCAB = 4096


class TextPreprocessing(BaseModel):
    """Texts -> (N, max_length) int64 token ids, right-padded with ``<pad>`` and truncated.

    Exactly one of ``chars`` (kind ``char``) and ``bpe`` (kind ``bpe``) is set.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    kind: Literal["text"] = "text"
    tokenizer: TokenizerKind
    max_length: int = Field(ge=1, le=1 << 20)
    """Token ids per text in ``encode_batch`` (and the longest id sequence ``transform`` accepts)."""
    chars: list[str] | None = None
    """``char``: the vocabulary after the special tokens (id 4 onwards), one code point each."""
    bpe: str | None = None
    """``bpe``: the tokeniser as the ``tokenizers`` library's JSON (``Tokenizer.to_str()``)."""

    _bpe: Tokenizer | None = PrivateAttr(None)
    _codes: np.ndarray = PrivateAttr()  # char: sorted code points ...
    _ids: np.ndarray = PrivateAttr()  # ... and the id of each

    @model_validator(mode="after")
    def _load(self) -> TextPreprocessing:
        if self.tokenizer == "char":
            if self.chars is None or self.bpe is not None:
                raise ValueError("a char tokeniser stores chars (and no bpe)")
            self._load_chars(self.chars)
        else:
            if self.bpe is None or self.chars is not None:
                raise ValueError("a bpe tokeniser stores bpe (and no chars)")
            self._load_bpe(self.bpe)
        return self

    def _load_chars(self, chars: list[str]) -> None:
        if not chars or any(len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise ValueError("chars must be distinct single characters, at least one")
        codes = np.array([ord(c) for c in chars], dtype=np.uint32)
        order = np.argsort(codes)
        self._codes, self._ids = codes[order], order.astype(np.int64) + len(SPECIAL_TOKENS)

    def _load_bpe(self, text: str) -> None:
        try:
            tk = Tokenizer.from_str(text)
        except Exception as e:  # the library raises plain Exception on malformed JSON
            raise ValueError(f"bpe is not a tokenizers JSON: {e}") from None
        if [tk.id_to_token(i) for i in range(len(SPECIAL_TOKENS))] != list(SPECIAL_TOKENS):
            raise ValueError(f"bpe must have {', '.join(SPECIAL_TOKENS)} as ids 0-3")
        tk.encode_special_tokens = True  # not saved in the JSON: set on every load
        self._bpe = tk

    def __eq__(self, other: object) -> bool:
        """Equal fitted state; the lookup tables and the Rust object built from it are not compared."""
        if not isinstance(other, TextPreprocessing):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]  # mutable list fields: unhashable, like the other kinds

    @classmethod
    def fit(
        cls,
        texts: Iterable[str],
        kind: TokenizerKind = "char",
        vocab_size: int | None = None,
        max_length: int = 128,
    ) -> TextPreprocessing:
        """Fit on the training texts only. ``vocab_size`` bounds the vocabulary, special tokens
        included: for ``bpe`` at least 260 (256 bytes + 4), default 4096; for ``char`` it keeps
        the most frequent characters, default all. Raises InvalidInput naming the argument."""
        corpus = _texts(texts, "texts")
        if not any(corpus):
            raise InvalidInput("texts: no training text to fit a tokeniser on")
        if max_length < 1:
            raise InvalidInput(f"max_length: must be at least 1, got {max_length}")
        if kind == "char":
            return cls(tokenizer="char", max_length=max_length, chars=_fit_chars(corpus, vocab_size))
        if kind == "bpe":
            return cls(tokenizer="bpe", max_length=max_length, bpe=_fit_bpe(corpus, vocab_size))
        raise InvalidInput(f"kind: expected 'char' or 'bpe', got {kind!r}")

    @property
    def vocab_size(self) -> int:
        if self._bpe is not None:
            return int(self._bpe.get_vocab_size(with_added_tokens=True))
        return len(SPECIAL_TOKENS) + len(self._codes)

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def unk_id(self) -> int:
        return UNK_ID

    @property
    def bos_id(self) -> int:
        return BOS_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, no special tokens added, no length limit (for a whole corpus)."""
        if not isinstance(text, str):
            raise InvalidInput(f"text: expected a string, got {type(text).__name__}")
        ids: list[int] = self._encode_array(text).tolist()
        return ids

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        """(N, max_length) int64: each text's ids, truncated to ``max_length``, then ``<pad>``."""
        batch = _texts(texts, "texts")
        if self._bpe is None:  # a char token is a code point: cutting the str truncates, one lookup for all
            cut = [t[: self.max_length] for t in batch]
            lengths = np.array([len(t) for t in cut], dtype=np.int64)
            ids = self._char_ids("".join(cut))
        else:
            with _valid_unicode():
                rows = [
                    e.ids[: self.max_length] for e in self._bpe.encode_batch(batch, add_special_tokens=False)
                ]
            lengths = np.array([len(r) for r in rows], dtype=np.int64)
            ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
        out = np.full((len(batch), self.max_length), PAD_ID, dtype=np.int64)
        out[np.arange(self.max_length) < lengths[:, None]] = ids  # a boolean mask fills row by row
        return out

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of ``ids``; special tokens (padding included) are dropped."""
        arr = np.asarray(ids)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise InvalidInput(f"ids: expected a list of token ids, got shape {arr.shape} of {arr.dtype}")
        bad = arr[(arr < 0) | (arr >= self.vocab_size)]
        if bad.size:
            raise InvalidInput(f"ids: {int(bad[0])} is not a token id (vocabulary of {self.vocab_size})")
        if self._bpe is not None:
            return str(self._bpe.decode(arr.tolist(), skip_special_tokens=True))
        assert self.chars is not None
        return "".join(self.chars[i - len(SPECIAL_TOKENS)] for i in arr.tolist() if i >= len(SPECIAL_TOKENS))

    def transform(self, x: np.ndarray | Sequence[Any]) -> np.ndarray:
        """A serving batch: texts ((N,) or (N, 1) strings or UTF-8 bytes) -> ``encode_batch``;
        token ids ((N, L) integers, L <= max_length) are checked against the vocabulary and
        passed through as int64."""
        arr = x if isinstance(x, np.ndarray) else np.asarray(x, dtype=object)
        if arr.dtype.kind in "iu":
            if arr.ndim != 2 or arr.shape[1] > self.max_length:
                raise InvalidInput(f"input: expected (N, L<={self.max_length}) token ids, got {arr.shape}")
            bad = arr[(arr < 0) | (arr >= self.vocab_size)]
            if bad.size:
                raise InvalidInput(
                    f"input: {int(bad[0])} is not a token id (vocabulary of {self.vocab_size})"
                )
            return arr.astype(np.int64, copy=False)
        if arr.dtype.kind not in "USO" or arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] != 1):
            raise InvalidInput(f"input: expected N texts or (N, L) token ids, got {arr.shape} of {arr.dtype}")
        return self.encode_batch([_as_text(v, i) for i, v in enumerate(arr.reshape(-1))])

    def tokenizer_json(self) -> str:
        """The tokeniser as a ``tokenizers`` JSON, for the version's ``tokenizer.json``. For
        ``char`` it is a WordLevel model over single characters that encodes as ``encode`` does
        (apart from literal special-token text, which ``tokenizers`` matches unless its user
        sets ``encode_special_tokens``)."""
        if self.bpe is not None:
            return self.bpe
        assert self.chars is not None
        vocab = {t: i for i, t in enumerate([*SPECIAL_TOKENS, *self.chars])}
        tk = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS[UNK_ID]))
        tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every char
        tk.decoder = decoders.Fuse()
        tk.add_special_tokens(list(SPECIAL_TOKENS))
        return str(tk.to_str())

    def _encode_array(self, text: str) -> np.ndarray:
        if self._bpe is not None:
            with _valid_unicode():
                return np.asarray(self._bpe.encode(text, add_special_tokens=False).ids, dtype=np.int64)
        return self._char_ids(text)

    def _char_ids(self, text: str) -> np.ndarray:
        # surrogatepass: a lone surrogate (valid in JSON strings) is a code point like any other
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        pos = np.minimum(np.searchsorted(self._codes, points), len(self._codes) - 1)
        return np.where(self._codes[pos] == points, self._ids[pos], UNK_ID)


def _fit_chars(corpus: list[str], vocab_size: int | None) -> list[str]:
    points, counts = np.unique(
        np.frombuffer("".join(corpus).encode("utf-32-le", "surrogatepass"), dtype="<u4"), return_counts=True
    )
    if vocab_size is not None:
        if vocab_size <= len(SPECIAL_TOKENS):
            raise InvalidInput(
                f"vocab_size: must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}"
            )
        keep = np.argsort(-counts, kind="stable")[
            : vocab_size - len(SPECIAL_TOKENS)
        ]  # ties: lower code point
        points = np.sort(points[keep])
    return [chr(p) for p in points.tolist()]


def _fit_bpe(corpus: list[str], vocab_size: int | None) -> str:
    size = DEFAULT_BPE_VOCAB if vocab_size is None else vocab_size
    if size < _BYTES + len(SPECIAL_TOKENS):
        raise InvalidInput(
            f"vocab_size: byte-level BPE needs at least {_BYTES + len(SPECIAL_TOKENS)} "
            f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens), got {size}"
        )
    tk = Tokenizer(models.BPE())  # no unk token: every byte is in the alphabet
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    with _valid_unicode():
        tk.train_from_iterator(corpus, trainer)
    return str(tk.to_str())


@contextmanager
def _valid_unicode() -> Iterator[None]:
    """The Rust side refuses a str holding a lone surrogate with a TypeError: bad input, named."""
    try:
        yield
    except TypeError as e:
        raise InvalidInput("text: not valid Unicode (a lone surrogate?)") from e


def _texts(texts: Iterable[str], where: str) -> list[str]:
    if isinstance(texts, str | bytes):
        raise InvalidInput(f"{where}: expected a list of texts, got a single {type(texts).__name__}")
    batch = list(texts)
    bad = next((i for i, t in enumerate(batch) if not isinstance(t, str)), None)
    if bad is not None:
        raise InvalidInput(f"{where}[{bad}]: expected a string, got {type(batch[bad]).__name__}")
    return batch


def _as_text(value: Any, i: int) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"input[{i}]: not valid UTF-8") from None
    if not isinstance(value, str):
        raise InvalidInput(f"input[{i}]: expected text, got {type(value).__name__}")
    return value
