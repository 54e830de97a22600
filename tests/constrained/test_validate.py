"""validate_spec: vocab-free and fast, for the HTTP process."""

from __future__ import annotations

import time

import pytest

from radixlm.constrained import GrammarError, GrammarSpec, validate_spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (GrammarSpec("regex", "("), "regex: invalid regex"),
        (GrammarSpec("regex", "(?=a)"), "lookaround"),
        (GrammarSpec("regex", ""), "empty"),
        (GrammarSpec("json_schema", '{"type": "nonsense"}'), "unsupported type 'nonsense'"),
        (GrammarSpec("json_schema", "{not json"), "not valid JSON"),
        (GrammarSpec("json_schema", "[1]"), "must be a JSON object"),
        (GrammarSpec("choices", "[]"), "non-empty JSON list"),
        (GrammarSpec("choices", '["a", 1]'), "list of strings"),
    ],
)
def test_bad_specs_are_refused_quickly(spec: GrammarSpec, message: str) -> None:
    start = time.monotonic()
    with pytest.raises(GrammarError, match=message):
        validate_spec(spec)
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (GrammarSpec("regex", "("), "regex: invalid regex"),
        (GrammarSpec("regex", "(?=a)"), "lookaround"),
        (GrammarSpec("regex", ""), "empty"),
        (GrammarSpec("json_schema", '{"type": "nonsense"}'), "json_schema: .*nonsense"),
        (GrammarSpec("json_schema", "{not json"), "not valid JSON"),
        (GrammarSpec("json_schema", '{"type": "string", "format": "no-such-format"}'), "format"),
        (GrammarSpec("choices", "[]"), "non-empty JSON list"),
        (GrammarSpec("ebnf", 'root ::= "a" undefined_rule'), "ebnf: "),
    ],
)
def test_llguidance_refuses_by_its_own_check(spec: GrammarSpec, message: str) -> None:
    start = time.monotonic()
    with pytest.raises(GrammarError, match=message):
        validate_spec(spec, "llguidance")
    assert time.monotonic() - start < 1.0


def test_llguidance_accepts_schemas_our_lowering_cannot_enforce() -> None:
    """llguidance enforces a pattern together with length bounds; our single-regex lowering
    (the outlines and xgrammar gate) refuses the pair, so the server asks the backend it runs."""
    spec = GrammarSpec("json_schema", '{"type": "string", "pattern": "^a+$", "minLength": 2}')
    validate_spec(spec, "llguidance")
    with pytest.raises(GrammarError):
        validate_spec(spec, "outlines")


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(GrammarError, match="unknown grammar kind"):
        GrammarSpec("yaml", "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spec",
    [
        GrammarSpec("regex", r"\d{3}-[a-z]+"),
        GrammarSpec("json_schema", '{"type": "object", "properties": {"a": {"type": "integer"}}}'),
        GrammarSpec("choices", '["yes", "no"]'),
    ],
)
def test_good_specs_pass(spec: GrammarSpec) -> None:
    validate_spec(spec)


def test_ebnf_goes_only_to_the_backends_that_parse_it() -> None:
    grammar = GrammarSpec("ebnf", 'root ::= "a"')
    validate_spec(grammar, "llguidance")
    validate_spec(grammar, "xgrammar")
    # outlines cannot: a 400 at the HTTP edge, not a compile failure later
    with pytest.raises(GrammarError, match="not supported by this backend"):
        validate_spec(grammar, "outlines")
    with pytest.raises(GrammarError, match="empty grammar"):
        validate_spec(GrammarSpec("ebnf", "  "), "xgrammar")


def test_unknown_backend_lists_the_valid_names(vocab) -> None:
    from radixlm.constrained import create_grammar_backend

    with pytest.raises(ValueError, match="llguidance.*outlines.*xgrammar"):
        create_grammar_backend("nope", vocab)
