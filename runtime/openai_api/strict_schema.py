"""OpenAI-style strict schemas: objects that list their properties accept no others.

JSON Schema allows unlisted properties by default, and a backend that honours that (llguidance)
lets a small model append keys until it runs out of tokens. OpenAI's structured outputs and
SGLang's default backend (xgrammar, strict mode) both close listed objects, as does outlines;
this makes every backend behave the same for OpenAI requests. Objects without ``properties``
(``{"type": "object"}``) stay open: they mean "any object".
"""

from __future__ import annotations

from typing import Any

# Keywords whose value is one subschema, a list of them, or a name -> subschema map.
_ONE = ("items", "additionalItems", "not", "if", "then", "else", "contains", "propertyNames")
_MANY = ("anyOf", "oneOf", "prefixItems")
_NAMED = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def strict_schema(schema: Any, close: bool = True) -> Any:
    """A copy of ``schema`` with ``additionalProperties: false`` wherever properties are listed
    and nothing was said about others. ``allOf`` members are not closed themselves: each would
    reject the properties the others list."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _ONE:
        if key in out:
            out[key] = strict_schema(out[key])
    for key in _MANY:
        if isinstance(out.get(key), list):
            out[key] = [strict_schema(s) for s in out[key]]
    if isinstance(out.get("allOf"), list):
        out["allOf"] = [strict_schema(s, close=False) for s in out["allOf"]]
    for key in _NAMED:
        if isinstance(out.get(key), dict):
            out[key] = {name: strict_schema(s) for name, s in out[key].items()}
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strict_schema(out["additionalProperties"])
    closed = "additionalProperties" in out or "patternProperties" in out
    if close and "properties" in out and not closed and "unevaluatedProperties" not in out:
        out["additionalProperties"] = False
    return out
