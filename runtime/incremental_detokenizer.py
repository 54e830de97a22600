"""Incremental detokenization with stop-string trimming (pure; one state per request).

Byte-level tokenizers can split one character over several tokens, so text is only released once
it decodes without a trailing replacement character. Text that could be the start of a stop
string is held back while streaming, so a stop string never leaks to the client.
"""

from __future__ import annotations

from typing import Protocol


class Decoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...


class DecodeState:
    def __init__(
        self,
        decoder: Decoder,
        stop: tuple[str, ...] = (),
        no_stop_trim: bool = False,
        skip_special_tokens: bool = True,
    ) -> None:
        self.decoder = decoder
        self.stop = stop
        self.no_stop_trim = no_stop_trim
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.text = ""  # all text decoded so far (not yet trimmed)
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return self.decoder.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def append(self, new_ids: list[int], final: bool = False) -> None:
        self.ids.extend(new_ids)
        prefix_text = self._decode(self.ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self.ids[self._prefix_offset :])
        if len(full_text) > len(prefix_text) and (final or not full_text.endswith("\ufffd")):
            self.text += full_text[len(prefix_text) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self.ids)

    def visible_text(self, finished: bool) -> str:
        """The text safe to show: cut at the first stop string; hold back a partial one."""
        text = self.text
        if not self.stop:
            return text
        cut = _first_stop(text, self.stop)
        if cut is not None:
            start, stop_str = cut
            return text if self.no_stop_trim else text[:start]
        if finished:
            return text
        return text[: len(text) - _partial_stop_suffix_len(text, self.stop)]


def _first_stop(text: str, stops: tuple[str, ...]) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    for s in stops:
        i = text.find(s)
        if i != -1 and (best is None or i < best[0]):
            best = (i, s)
    return best


def _partial_stop_suffix_len(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of some stop string."""
    longest = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:n]):
                longest = n
                break
    return longest
