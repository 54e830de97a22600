"""Spec -> the one regex the outlines backend compiles (also the vocab-free validity check)."""

from __future__ import annotations

import json

from radixlm.constrained import charset
from radixlm.constrained.regex_translate import translate
from radixlm.constrained.schema_to_regex import json_schema_regex
from radixlm.constrained.spec import GrammarError, GrammarSpec

MAX_SPEC_CHARS = 1_000_000


def choices_list(value: str) -> list[str]:
    try:
        choices = json.loads(value)
    except json.JSONDecodeError as exc:
        raise GrammarError(f"choices: not valid JSON: {exc}") from exc
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
        raise GrammarError("choices: must be a non-empty JSON list of strings")
    return choices


def literal_regex(text: str) -> str:
    return "".join(charset.to_regex(((ord(c), ord(c)),)) for c in text)


def spec_to_regex(spec: GrammarSpec, *, compact_json: bool = False) -> str:
    """Raises GrammarError for anything we cannot enforce exactly (ebnf included)."""
    if len(spec.value) > MAX_SPEC_CHARS:
        raise GrammarError(f"{spec.kind}: spec longer than {MAX_SPEC_CHARS} characters")
    if spec.kind == "regex":
        if not spec.value:
            raise GrammarError("regex: empty regex")
        return translate(spec.value, universe=charset.ALL_CHARS, search=False, where="regex")
    if spec.kind == "json_schema":
        return json_schema_regex(spec.value, compact=compact_json)
    if spec.kind == "choices":
        return "(?:" + "|".join(literal_regex(c) for c in choices_list(spec.value)) + ")"
    raise GrammarError(
        f"{spec.kind}: not supported by this backend (use --grammar-backend llguidance or xgrammar)"
    )
