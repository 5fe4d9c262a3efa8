"""Token ids to streamed text: incremental detokenisation that never splits a UTF-8
character across chunks, and stop strings that end the text before they appear — without
streaming a piece of a stop string that then completes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Decoder(Protocol):
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...


class IncrementalDetokenizer:
    """``push(token_id)`` returns the text the new token completes ("" while it is the
    first byte or two of a character). Decodes a short window, not the whole output, so a
    step costs the same at token 10 and token 10,000."""

    def __init__(self, decoder: Decoder, prompt_tail: Sequence[int] = ()) -> None:
        # the prompt's last tokens give the first output token its context (leading spaces)
        self.decoder, self.ids = decoder, list(prompt_tail)
        self.prefix, self.read = 0, len(self.ids)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self.decoder.decode(self.ids[self.prefix : self.read])
        after = self.decoder.decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """What is left at the end of a sequence (a dangling partial character included)."""
        before = self.decoder.decode(self.ids[self.prefix : self.read])
        after = self.decoder.decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return after[len(before) :]


class StopStrings:
    """Text in, text out: ``feed(delta)`` returns what may be sent now and whether a stop
    string ended the text (which is then cut before it; the stop itself is never sent)."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.longest = max((len(s) for s in self.stops), default=0)
        self.text, self.sent = "", 0

    def feed(self, delta: str) -> tuple[str, bool]:
        self.text += delta
        if not self.stops:
            out, self.sent = self.text[self.sent :], len(self.text)
            return out, False
        start = max(0, self.sent - self.longest + 1)
        hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if hits:
            end = min(hits)
            out, self.text = self.text[self.sent : end], self.text[:end]
            self.sent = end
            return out, True
        safe = len(self.text) - self._held_back()
        out, self.sent = self.text[self.sent : safe], max(self.sent, safe)
        return out, False

    def flush(self) -> str:
        out, self.sent = self.text[self.sent :], len(self.text)
        return out

    def _held_back(self) -> int:
        """Length of the longest end of the text that could still grow into a stop string."""
        for n in range(min(self.longest - 1, len(self.text)), 0, -1):
            tail = self.text[-n:]
            if any(s.startswith(tail) for s in self.stops):
                return n
        return 0
