"""The values every grammar backend shares: the spec, the vocabulary view, the one error type."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

GrammarKind = Literal["regex", "json_schema", "ebnf", "choices"]
GRAMMAR_KINDS: tuple[str, ...] = ("regex", "json_schema", "ebnf", "choices")


class GrammarError(ValueError):
    """A spec we cannot enforce exactly. ``message`` names what is wrong; the server answers 400."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class GrammarSpec:
    """What a request constrains its output to.

    ``value`` is a regex for ``regex``, a JSON string for ``json_schema``, an EBNF grammar for
    ``ebnf`` and a JSON list of strings for ``choices``.
    """

    kind: GrammarKind
    value: str

    def __post_init__(self) -> None:
        if self.kind not in GRAMMAR_KINDS:
            raise GrammarError(f"unknown grammar kind {self.kind!r}; valid: {list(GRAMMAR_KINDS)}")
        if not isinstance(self.value, str):
            raise GrammarError(f"{self.kind}: the spec value must be a string")

    @classmethod
    def from_schema(cls, schema: object) -> GrammarSpec:
        """A ``json_schema`` spec from a schema object, serialised canonically (stable cache key)."""
        return cls("json_schema", json.dumps(schema, sort_keys=False, separators=(",", ":")))


@dataclass(frozen=True)
class TokenizerVocab:
    """The tokenizer as the grammar layer sees it: raw bytes per token id, nothing else.

    ``token_bytes[i]`` is None for special/control tokens, which are never allowed inside a
    grammar; EOS ids are allowed only where the text so far is a complete match. Ids at or past
    ``len(token_bytes)`` (model vocab padding, up to ``vocab_size``) are never allowed.
    ``tokenizer_json`` (optional, the HF `tokenizer.json` text) lets llguidance tokenize forced
    text exactly as the model's tokenizer does; without it llguidance gets longest-match.
    """

    token_bytes: tuple[bytes | None, ...]
    eos_token_ids: tuple[int, ...]
    vocab_size: int
    tokenizer_json: str | None = None

    def __post_init__(self) -> None:
        assert self.vocab_size >= len(self.token_bytes), "vocab_size smaller than the token table"
        assert self.eos_token_ids, "a vocabulary needs at least one EOS id"
        for eos_id in self.eos_token_ids:
            assert 0 <= eos_id < self.vocab_size, f"EOS id {eos_id} out of range"
