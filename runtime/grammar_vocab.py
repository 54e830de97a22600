"""Turn a Hugging Face tokenizer into the grammar layer's TokenizerVocab (raw bytes per id).

Byte-level BPE (GPT-2, SmolLM2, Llama-3, Qwen2) spells bytes with the GPT-2 printable alphabet;
SentencePiece vocabularies (Llama-2, Mistral) spell a space as U+2581 and raw bytes as `<0xAB>`.
Special and control tokens map to None so no grammar can ever allow them (e.g. `<|im_start|>`
inside a JSON string); EOS is allowed by the matcher only in accepting states.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from typing import Any

from radixlm.constrained import TokenizerVocab

_SENTENCEPIECE_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def gpt2_unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: printable stand-ins -> the raw byte."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _decoder_types(tokenizer: Any) -> set[str]:
    decoder = json.loads(tokenizer.backend_tokenizer.to_str()).get("decoder") or {}
    found = {decoder.get("type", "")}
    found.update(d.get("type", "") for d in decoder.get("decoders", []) or [])
    return found


def token_to_bytes(token: str, *, byte_level: bool, unicode_to_byte: dict[str, int]) -> bytes:
    if byte_level:
        if all(c in unicode_to_byte for c in token):
            return bytes(unicode_to_byte[c] for c in token)
        return token.encode("utf-8")  # an added plain-text token, stored verbatim
    match = _SENTENCEPIECE_BYTE.fullmatch(token)
    if match:
        return bytes([int(match.group(1), 16)])
    return token.replace("\u2581", " ").encode("utf-8")


def vocab_from_hf_tokenizer(
    tokenizer: Any,
    *,
    vocab_size: int | None = None,
    eos_token_ids: Sequence[int] | None = None,
) -> TokenizerVocab:
    """``vocab_size``: the model's (may exceed the tokenizer's; extra ids are never allowed).
    ``eos_token_ids``: defaults to the tokenizer's EOS (add the generation config's ones)."""
    byte_level = "ByteLevel" in _decoder_types(tokenizer)
    unicode_to_byte = gpt2_unicode_to_byte()
    special_ids = set(tokenizer.all_special_ids)
    special_ids.update(i for i, t in tokenizer.added_tokens_decoder.items() if t.special)
    table: list[bytes | None] = [None] * len(tokenizer)
    for token, token_id in tokenizer.get_vocab().items():
        if token_id in special_ids:
            continue
        data = token_to_bytes(token, byte_level=byte_level, unicode_to_byte=unicode_to_byte)
        table[token_id] = data or None
    eos = tuple(eos_token_ids) if eos_token_ids else (tokenizer.eos_token_id,)
    return TokenizerVocab(
        token_bytes=tuple(table),
        eos_token_ids=tuple(int(i) for i in eos),
        vocab_size=max(vocab_size or 0, len(table)),
        tokenizer_json=_tokenizer_json(tokenizer),
    )


def _tokenizer_json(tokenizer: Any) -> str:
    # As llguidance.hf does: serialise the Rust tokenizer without padding/truncation.
    backend = copy.copy(tokenizer.backend_tokenizer)
    backend.no_padding()
    backend.no_truncation()
    return backend.to_str()
