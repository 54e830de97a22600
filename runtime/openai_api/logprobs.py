"""Logprobs in the two OpenAI shapes, from (logprob, token_id) pairs.

chat:        {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob",
             "bytes"}]}]}
completions: {"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from radixlm.runtime.io_struct import LogprobPair
from radixlm.runtime.tokenizer import Tokenizer

# OpenAI reports impossible tokens as -9999.0; JSON has no -Infinity.
MIN_LOGPROB = -9999.0


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level BPE: the printable character standing for each byte, inverted."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class TokenTexts:
    """Per-token display text and exact bytes, cached (tokens repeat a lot)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._text: dict[int, str] = {}
        self._bytes: dict[int, list[int]] = {}

    def text(self, token_id: int) -> str:
        if token_id not in self._text:
            self._text[token_id] = self.tokenizer.token_text(token_id)
        return self._text[token_id]

    def bytes(self, token_id: int) -> list[int]:
        if token_id not in self._bytes:
            raw = self.tokenizer.token_bytes_text(token_id) or ""
            decoder = _byte_decoder()
            if raw and all(ch in decoder for ch in raw) and token_id not in self._special:
                self._bytes[token_id] = [decoder[ch] for ch in raw]
            else:  # not a byte-level token (SentencePiece, special tokens): its text's bytes
                self._bytes[token_id] = list(self.text(token_id).encode("utf-8"))
        return self._bytes[token_id]

    @property
    def _special(self) -> frozenset[int]:
        return self.tokenizer.special_ids


def _value(logprob: float | None) -> float | None:
    return None if logprob is None else max(logprob, MIN_LOGPROB)


def chat_logprobs(
    texts: TokenTexts, pairs: list[LogprobPair], tops: list[list[LogprobPair]] | None
) -> dict[str, Any]:
    content = []
    for i, (logprob, token_id) in enumerate(pairs):
        top = tops[i] if tops else []
        content.append(
            {
                "token": texts.text(token_id),
                "logprob": _value(logprob),
                "bytes": texts.bytes(token_id),
                "top_logprobs": [
                    {"token": texts.text(t), "logprob": _value(lp), "bytes": texts.bytes(t)}
                    for lp, t in top
                ],
            }
        )
    return {"content": content}


def completion_logprobs(
    texts: TokenTexts,
    pairs: list[LogprobPair],
    tops: list[list[LogprobPair]] | None,
    first_offset: int,
) -> dict[str, Any]:
    """``text_offset`` counts characters from the start of the returned ``text``. ``tops`` is
    None when no top logprobs were asked for; an empty row (the first prompt token) gives None."""
    tokens, offsets = [], []
    offset = first_offset
    for _, token_id in pairs:
        token = texts.text(token_id)
        tokens.append(token)
        offsets.append(offset)
        offset += len(token)
    top_dicts = None
    if tops is not None:
        top_dicts = [{texts.text(t): _value(lp) for lp, t in row} if row else None for row in tops]
    return {
        "tokens": tokens,
        "token_logprobs": [_value(lp) for lp, _ in pairs],
        "top_logprobs": top_dicts,
        "text_offset": offsets,
    }


def merge_completion_logprobs(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Joins the logprobs of the echoed prompt and of the completion."""
    merged = {key: first[key] + second[key] for key in ("tokens", "token_logprobs", "text_offset")}
    tops = None
    if first["top_logprobs"] is not None and second["top_logprobs"] is not None:
        tops = first["top_logprobs"] + second["top_logprobs"]
    merged["top_logprobs"] = tops
    return merged
