"""Tokenisers: exact round trips (non-ASCII included), fixed special ids, padding and truncation,
vocabulary bounds, JSON round trips and errors that name the problem."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from tokenizers import Tokenizer

from modelhost.datasets.tokenizers import BOS_ID, EOS_ID, PAD_ID, UNK_ID, TextPreprocessing
from modelhost.errors import InvalidInput

TRAIN = [
    "the café serves crème brûlée\n",
    "中文 is written without spaces: 我们喜欢模型。\n",
    "emoji 🙂🚀 and a family 👨‍👩‍👧 (a ZWJ sequence)\t\n",
    "the quick brown fox jumps over the lazy dog " * 3,
]
SEEN = "the café 中文 🙂🚀 👨‍👩‍👧\n\tbrûlée"  # only characters that occur in TRAIN


@pytest.fixture(scope="module")
def char() -> TextPreprocessing:
    return TextPreprocessing.fit(TRAIN, "char", max_length=8)


@pytest.fixture(scope="module")
def bpe() -> TextPreprocessing:
    return TextPreprocessing.fit(TRAIN * 20, "bpe", vocab_size=300, max_length=8)


def test_special_tokens_have_fixed_ids(char, bpe):
    for t in (char, bpe):
        assert (t.pad_id, t.unk_id, t.bos_id, t.eos_id) == (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert min(char.encode(SEEN)) >= 4 and min(bpe.encode(SEEN)) >= 4


def test_char_round_trips_seen_text_exactly(char):
    ids = char.encode(SEEN)
    assert len(ids) == len(SEEN)  # one id per code point
    assert char.decode(ids) == SEEN
    assert char.vocab_size == 4 + len(set("".join(TRAIN)))


def test_char_unseen_characters_are_unk_and_dropped_by_decode(char):
    ids = char.encode("cafe\u00e7 Ж")  # ç and Ж never occur in training
    assert ids[4] == UNK_ID and ids[6] == UNK_ID
    assert char.decode(ids) == "cafe "


def test_char_vocab_size_keeps_the_most_frequent_characters():
    t = TextPreprocessing.fit(["aaaa bbb cc d"], "char", vocab_size=6, max_length=4)
    assert t.chars == [" ", "a"] and t.vocab_size == 6  # ' ' x3 and 'a' x4 beat 'b' x3 on code point
    assert t.encode("ab ") == [5, UNK_ID, 4]


def test_bpe_round_trips_any_text_exactly(bpe):
    assert bpe.decode(bpe.encode(SEEN)) == SEEN
    unseen = (
        "Съешь же ещё этих мягких французских булок ≠ ∑ \U0001d518\U0001d52b \x00"  # 4-byte UTF-8 and NUL too
    )
    ids = bpe.encode(unseen)
    assert UNK_ID not in ids  # byte-level: every byte is in the vocabulary
    assert bpe.decode(ids) == unseen


def test_bpe_vocab_size_is_an_upper_bound_and_merges_compress():
    corpus = TRAIN * 20
    small = TextPreprocessing.fit(corpus, "bpe", vocab_size=300, max_length=8)
    large = TextPreprocessing.fit(corpus, "bpe", vocab_size=600, max_length=8)
    assert 260 < small.vocab_size <= 300
    assert small.vocab_size < large.vocab_size <= 600
    text = "".join(TRAIN)
    assert max(large.encode(text)) < large.vocab_size
    assert len(large.encode(text)) < len(small.encode(text)) < len(text.encode())  # merges at work


def test_special_token_text_is_just_text(char, bpe):
    t = TextPreprocessing.fit(["<eos> <pad>"], "char", max_length=8)
    assert t.encode("<eos>") == [t.chars.index(c) + 4 for c in "<eos>"]
    assert t.decode(t.encode("<pad><eos>")) == "<pad><eos>"
    ids = bpe.encode("a <eos> b")
    assert EOS_ID not in ids and bpe.decode(ids) == "a <eos> b"


def test_encode_batch_pads_and_truncates(char, bpe):
    for t in (char, bpe):
        texts = ["the", "", SEEN]
        out = t.encode_batch(texts)
        assert out.shape == (3, 8) and out.dtype == np.int64
        short = t.encode("the")
        np.testing.assert_array_equal(out[0], short + [PAD_ID] * (8 - len(short)))
        np.testing.assert_array_equal(out[1], [PAD_ID] * 8)
        np.testing.assert_array_equal(out[2], t.encode(SEEN)[:8])  # truncated on the right
        assert t.decode(out[0]) == "the"
        assert t.encode_batch([]).shape == (0, 8)
        many = [SEEN[i:] for i in range(len(SEEN))]  # every length, emoji cut mid-sequence included
        expected = [(t.encode(m) + [PAD_ID] * 8)[:8] for m in many]
        np.testing.assert_array_equal(t.encode_batch(many), expected)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_json_round_trip_gives_identical_ids(kind, char, bpe):
    t = char if kind == "char" else bpe
    u = TextPreprocessing.model_validate_json(t.model_dump_json())
    assert u == t and u is not t
    assert u.encode(SEEN) == t.encode(SEEN)
    np.testing.assert_array_equal(u.encode_batch(TRAIN), t.encode_batch(TRAIN))
    assert u.decode(t.encode(SEEN)) == SEEN


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_tokenizer_json_encodes_like_encode(kind, char, bpe):
    """``tokenizer.json`` shipped with a version: loaded by the tokenizers library, same ids."""
    t = char if kind == "char" else bpe
    shipped = Tokenizer.from_str(t.tokenizer_json())
    for text in [SEEN, "cafe\u00e7 Ж unseen"]:
        assert shipped.encode(text, add_special_tokens=False).ids == t.encode(text)
    assert shipped.decode(t.encode(SEEN)) == SEEN
    assert shipped.get_vocab_size() == t.vocab_size


def test_transform_takes_texts_bytes_or_token_ids(char):
    texts = np.array(["the", "中文"], dtype=object)
    expected = char.encode_batch(["the", "中文"])
    np.testing.assert_array_equal(char.transform(texts), expected)
    np.testing.assert_array_equal(char.transform(texts.reshape(2, 1)), expected)
    np.testing.assert_array_equal(char.transform([b"the", "中文".encode()]), expected)
    ids = np.array([[4, 5, 6]], dtype=np.int32)
    out = char.transform(ids)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, ids)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((2, 3), np.float32), r"input: expected N texts or \(N, L\) token ids"),
        (np.array([[4, 99999]]), "input: 99999 is not a token id"),
        (np.array([[-1]]), "input: -1 is not a token id"),
        (np.ones((1, 9), np.int64), r"input: expected \(N, L<=8\) token ids"),
        ([b"\xff\xfe"], r"input\[0\]: not valid UTF-8"),
        ([3.5], r"input\[0\]: expected text, got float"),
    ],
)
def test_bad_serving_input_is_refused_naming_the_problem(char, x, message):
    with pytest.raises(InvalidInput, match=message):
        char.transform(x)


def test_decode_refuses_ids_outside_the_vocabulary(char, bpe):
    for t in (char, bpe):
        with pytest.raises(InvalidInput, match=f"ids: {t.vocab_size} is not a token id"):
            t.decode([4, t.vocab_size])
    with pytest.raises(InvalidInput, match="ids: expected a list of token ids"):
        char.decode([[4]])


def test_lone_surrogates_are_unk_for_char_and_refused_for_bpe(char, bpe):
    assert char.encode("a\ud800") == [char.encode("a")[0], UNK_ID]
    with pytest.raises(InvalidInput, match="not valid Unicode"):
        bpe.encode("a\ud800")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((["abc"], "bpe", 100), "vocab_size: byte-level BPE needs at least 260"),
        ((["abc"], "char", 4), "vocab_size: must exceed the 4 special tokens"),
        ((["", ""], "char"), "texts: no training text"),
        ((["ok", 3], "char"), r"texts\[1\]: expected a string, got int"),
        (("just one string", "char"), "texts: expected a list of texts"),
        ((["abc"], "wordpiece"), "kind: expected 'char' or 'bpe'"),
        ((["abc"], "char", None, 0), "max_length: must be at least 1"),
    ],
)
def test_bad_fit_arguments_name_the_argument(args, message):
    with pytest.raises(InvalidInput, match=message):
        TextPreprocessing.fit(*args)


def test_saved_state_is_validated():
    with pytest.raises(ValidationError, match="distinct single characters"):
        TextPreprocessing(tokenizer="char", max_length=4, chars=["ab"])
    with pytest.raises(ValidationError, match="a char tokeniser stores chars"):
        TextPreprocessing(tokenizer="char", max_length=4, bpe="{}")
    with pytest.raises(ValidationError, match="bpe is not a tokenizers JSON"):
        TextPreprocessing(tokenizer="bpe", max_length=4, bpe="{not json")
    with pytest.raises(ValidationError, match="max_length"):
        TextPreprocessing(tokenizer="char", max_length=0, chars=["a"])
