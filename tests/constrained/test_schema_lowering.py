"""JSON schema -> regex: fail closed on what outlines-core drops, exact on what we accept."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from outlines_core.json_schema import build_regex_from_schema

from radixlm.constrained import GrammarError
from radixlm.constrained.schema_to_regex import json_schema_regex
from tests.constrained.conftest import python_regex


def ours(schema: object, compact: bool = True) -> str:
    return json_schema_regex(json.dumps(schema), compact=compact)


def raw_outlines(schema: object) -> str:
    return build_regex_from_schema(json.dumps(schema), whitespace_pattern="")


# (base schema, the same with one more keyword) pairs where outlines-core returns the SAME regex,
# i.e. silently drops the keyword. Ours must enforce it (different regex) or refuse it by name.
DROPPED_BY_OUTLINES = [
    ("minimum", {"type": "integer"}, {"type": "integer", "minimum": 3}),
    ("maximum", {"type": "number"}, {"type": "number", "maximum": 3}),
    ("exclusiveMinimum", {"type": "integer"}, {"type": "integer", "exclusiveMinimum": 0}),
    ("multipleOf", {"type": "number"}, {"type": "number", "multipleOf": 0.5}),
    (
        "uniqueItems",
        {"type": "array", "items": {"type": "integer"}},
        {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
    ),
    ("not", {"type": "string"}, {"type": "string", "not": {"const": "a"}}),
    ("propertyNames", {"type": "object"}, {"type": "object", "propertyNames": {"maxLength": 2}}),
    (
        "patternProperties",
        {"type": "object"},
        {"type": "object", "patternProperties": {"^x": {"type": "integer"}}},
    ),
    (
        "dependencies",
        {"type": "object", "properties": {"a": {"type": "integer"}}},
        {"type": "object", "properties": {"a": {"type": "integer"}}, "dependencies": {"a": ["b"]}},
    ),
    (
        "if",
        {"type": "object"},
        {"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}},
    ),
    ("contains", {"type": "array"}, {"type": "array", "contains": {"type": "integer"}}),
    (
        "pattern",
        {"type": "string", "maxLength": 5},
        {"type": "string", "maxLength": 5, "pattern": "^a"},
    ),
    ("required", {"type": "object"}, {"type": "object", "required": ["a"]}),
    (
        "anyOf",
        {"type": "object", "properties": {"a": {"type": "integer"}}},
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}},
            "anyOf": [{"required": ["a"]}],
        },
    ),
    (
        "minProperties",
        {"type": "object", "properties": {"a": {"type": "integer"}}},
        {"type": "object", "properties": {"a": {"type": "integer"}}, "minProperties": 1},
    ),
]


@pytest.mark.parametrize(
    ("keyword", "base", "extended"), DROPPED_BY_OUTLINES, ids=lambda x: str(x)[:20]
)
def test_keywords_outlines_drops_are_enforced_or_refused(keyword, base, extended) -> None:
    assert raw_outlines(base) == raw_outlines(extended), f"outlines-core now honours {keyword}"
    try:
        regex = ours(extended)
    except GrammarError as exc:
        assert keyword in exc.message and " at /" in exc.message, exc.message
        return
    assert regex != ours(base), f"{keyword} was dropped"


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "nonsense"}, "unsupported type 'nonsense' at /"),
        (
            {"properties": {"x": {"type": "object", "patternProperties": {"a": {}}}}},
            "unsupported keyword 'patternProperties' at /properties/x",
        ),
        ({"not": {}}, "unsupported keyword 'not' at /"),
        ({"$ref": "#/definitions/missing"}, "does not resolve"),
        ({"$ref": "http://example.com/s.json"}, "only local"),
        (
            {
                "definitions": {"a": {"properties": {"n": {"$ref": "#/definitions/a"}}}},
                "$ref": "#/definitions/a",
            },
            "recursive",
        ),
        (
            {"oneOf": [{"type": "object"}, {"type": "object", "properties": {"a": {"const": 1}}}]},
            "'oneOf' whose branches may overlap",
        ),
        ({"type": "string", "format": "ipv6"}, "unsupported format 'ipv6'"),
        ({"type": "string", "pattern": "(?=a)"}, "lookaround"),
        ({"type": "integer", "minimum": 5, "maximum": 1}, "admits no value"),
        ({"type": "object", "properties": {'a"b': {}}}, "needs JSON escaping"),
    ],
)
def test_refusals_name_the_problem(schema: object, message: str) -> None:
    with pytest.raises(GrammarError) as info:
        ours(schema)
    assert message in info.value.message


def test_outlines_empty_subschema_bug_is_avoided() -> None:
    # outlines-core writes "any value" unparenthesised: nested, it accepts `{null}`.
    schema = {"type": "object", "properties": {"a": {}}}
    assert re.fullmatch(raw_outlines(schema), "{null}")
    assert not re.fullmatch(python_regex(ours(schema)), "{null}")


SCHEMAS_AND_INSTANCES = [
    ({"type": "integer", "minimum": -3, "exclusiveMaximum": 20}, [-4, -3, 0, 19, 20, 7.5]),
    ({"type": "number", "minimum": 0, "maximum": 10}, [-0.5, 0, 0.5, 9.99, 10, 10.5, 3]),
    ({"type": "string", "pattern": "^[a-z]+@x\\.com$"}, ["a@x.com", "A@x.com", "@x.com"]),
    ({"type": "string", "pattern": "b+"}, ["abba", "aaa", "b"]),
    ({"type": "string", "format": "date"}, ["2024-02-28", "2024-02-30", "24-01-01"]),
    ({"enum": ["a", 1, None, True], "type": ["string", "null"]}, ["a", 1, None, True, "b"]),
    (
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {
                    "properties": {"a": {"maximum": 5}, "b": {"type": "string"}},
                    "additionalProperties": False,
                },
            ]
        },
        [{"a": 1}, {"a": 1, "b": "x"}, {"b": "x"}, {"a": "1"}, {"a": 7}, {"a": 1, "c": 2}],
    ),
    (
        {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {"k": {"const": "x"}, "v": {"type": "integer"}},
                    "required": ["k", "v"],
                },
                {"type": "object", "properties": {"k": {"const": "y"}}, "required": ["k"]},
            ]
        },
        [{"k": "x", "v": 1}, {"k": "y"}, {"k": "z"}, {"k": "x"}],
    ),
    (
        {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 2},
        [[], [True], [True, False], [True, True, True]],
    ),
    (
        {
            "type": "object",
            "properties": {"n": {"type": "string", "maxLength": 2}},
            "patternProperties": {"^n": {"minLength": 1}},
            "required": ["n"],
        },
        [{"n": ""}, {"n": "a"}, {"n": "abc"}],
    ),
]


@pytest.mark.parametrize(("schema", "instances"), SCHEMAS_AND_INSTANCES, ids=lambda x: str(x)[:30])
def test_regex_agrees_with_jsonschema(schema: object, instances: list) -> None:
    # Every schema here is exactly expressible: no valid instance may be lost, none invalid kept.
    checker = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    for compact in (True, False):
        regex = re.compile(python_regex(ours(schema, compact=compact)))
        separators = (",", ":") if compact else (", ", ": ")
        for instance in instances:
            text = json.dumps(instance, separators=separators)
            valid = checker.is_valid(instance)
            if regex.fullmatch(text):
                assert valid, f"accepted invalid {text}"
            else:
                assert not valid, f"rejected valid {text}"


def test_date_time_is_a_sound_subset() -> None:
    # RFC 3339 requires the offset; the installed jsonschema may not check it, so no equality.
    regex = re.compile(python_regex(ours({"type": "string", "format": "date-time"})))
    assert regex.fullmatch('"2024-01-01T10:00:00Z"')
    assert regex.fullmatch('"2024-01-01T10:00:00.5+02:00"')
    assert not regex.fullmatch('"2024-01-01T10:00:00"')
    assert not regex.fullmatch('"2024-02-30T10:00:00Z"')
