"""JSON schema text -> one regex, via our fail-closed lowering and outlines-core's converter."""

from __future__ import annotations

import hashlib
import json

from outlines_core.json_schema import build_regex_from_schema

from radixlm.constrained.schema_lower import lower_schema
from radixlm.constrained.spec import GrammarError

# Between JSON tokens we allow at most one space or one newline: enough for `{"a": 1, "b": 2}`
# and for one-line-per-key output without indentation, never a run of blank lines (the
# runaway-whitespace failure). Each optional slot costs DFA states, so wider patterns (indents)
# cost compile time on every schema; measured in docs/constrained.md.
DEFAULT_WHITESPACE = r"[ \n]?"
COMPACT_WHITESPACE = ""
MAX_REGEX_CHARS = 2_000_000


def parse_schema(text: str) -> object:
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GrammarError(f"json_schema: not valid JSON: {exc}") from exc
    if not isinstance(schema, (dict, bool)):
        raise GrammarError("json_schema: a schema must be a JSON object or boolean")
    return schema


def json_schema_regex(text: str, *, compact: bool = False) -> str:
    """The regex of JSON texts (our whitespace policy) valid under the schema ``text``."""
    schema = parse_schema(text)
    # The nonce makes placeholders unguessable: a schema would have to contain its own hash.
    nonce = hashlib.sha256(text.encode()).hexdigest()[:16]
    lowered, holes = lower_schema(schema, nonce)
    whitespace = COMPACT_WHITESPACE if compact else DEFAULT_WHITESPACE
    try:
        regex = build_regex_from_schema(json.dumps(lowered), whitespace_pattern=whitespace)
    except ValueError as exc:
        raise GrammarError(f"json_schema: {str(exc).splitlines()[0]}") from exc
    except TypeError as exc:  # outlines-core's JSON parser stops at 128 nesting levels
        raise GrammarError("json_schema: the schema nests too deeply to convert") from exc
    for placeholder, hole in holes.items():
        quoted = f'"{placeholder}"'
        assert quoted in regex, f"placeholder {placeholder} lost in conversion"
        regex = regex.replace(quoted, f"(?:{hole})")
    if len(regex) > MAX_REGEX_CHARS:
        raise GrammarError(f"json_schema: the schema's regex exceeds {MAX_REGEX_CHARS} characters")
    return regex
