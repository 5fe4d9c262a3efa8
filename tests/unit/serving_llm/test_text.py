"""Streamed text: whole UTF-8 characters across token boundaries; stop strings never leak."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from modelhost.serving.llm.chat import TemplateError, render_chat
from modelhost.serving.llm.text import IncrementalDetokenizer, StopStrings


@pytest.fixture(scope="module")
def byte_tokenizer() -> Tokenizer:
    """Byte-level: one token per byte, so a 4-byte emoji arrives in 4 tokens."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tk = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    return tk


def test_multibyte_characters_are_never_split(byte_tokenizer) -> None:
    text = "héllo 🤖 中文 ok"
    ids = byte_tokenizer.encode(text).ids
    assert len(ids) == len(text.encode())  # really one token per byte
    d = IncrementalDetokenizer(byte_tokenizer)
    chunks = [d.push(i) for i in ids]
    assert "".join(chunks) + d.flush() == text
    assert all("\ufffd" not in c for c in chunks)
    assert "🤖" in chunks  # arrives whole, with its fourth byte


def test_stop_strings_cut_the_text_and_are_never_streamed() -> None:
    s = StopStrings(["END", "\n\n"])
    out = [s.feed(piece) for piece in ["Hello E", "N", "ough said. E", "ND and more"]]
    sent = "".join(text for text, _ in out)
    assert sent == "Hello ENough said. " and out[-1][1] is True
    assert [done for _, done in out] == [False, False, False, True]
    assert out[0][0] == "Hello "  # "E" could start "END": held back until it can't


def test_without_stops_everything_streams_at_once() -> None:
    s = StopStrings([])
    assert s.feed("abc") == ("abc", False) and s.flush() == ""


TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_chat_template_renders_the_models_own_format() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <b>"}]
    out = render_chat(TEMPLATE, messages, eos_token="</s>")
    assert out == "<|system|>Be brief.</s>\n<|user|>Hi <b></s>\n<|assistant|>"


def test_a_template_cannot_reach_python_objects() -> None:
    evil = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(TemplateError):
        render_chat(evil, [{"role": "user", "content": "x"}])
    with pytest.raises(TemplateError, match="no system role"):
        render_chat("{{ raise_exception('no system role') }}", [{"role": "user", "content": "x"}])
    with pytest.raises(Exception, match="role"):
        render_chat(TEMPLATE, [{"role": "hacker", "content": "x"}])
