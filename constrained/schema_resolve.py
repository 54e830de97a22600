"""Flatten a JSON-schema node: inline local `$ref`s and fold `allOf` (and `$ref` siblings) into
one dict by intersecting keyword by keyword.

Children stay raw: where two schemas constrain the same child (a property, `items`) the child
becomes `{"allOf": [a, b]}` and is flattened when it is lowered. An intersection we cannot
express raises GrammarError; an empty one (e.g. `type` string and integer) returns UNSAT.
"""

from __future__ import annotations

import math
from fractions import Fraction
from urllib.parse import unquote

from radixlm.constrained.spec import GrammarError

UNSAT: dict = {"__unsatisfiable__": True}
# Key of a flat schema listing the `$ref`s expanded on the way to it: children are lowered with
# it so a reference cycle is caught however many properties/items it runs through.
REFS = "__refs__"
_LOWER_BOUNDS = ("minLength", "minItems", "minProperties")
_UPPER_BOUNDS = ("maxLength", "maxItems", "maxProperties")
_TYPE_NAMES = ("null", "boolean", "integer", "number", "string", "array", "object")
# Keywords that constrain values (draft-04 to 2020-12). Everything else (title, description,
# default, examples, $schema, $id, definitions, vendor extensions...) is an annotation: dropped.
VALIDATION_KEYWORDS = frozenset(
    """type enum const multipleOf maximum exclusiveMaximum minimum exclusiveMinimum maxLength
    minLength pattern format maxItems minItems uniqueItems maxContains minContains contains items
    prefixItems additionalItems unevaluatedItems maxProperties minProperties required
    dependentRequired dependentSchemas dependencies properties patternProperties
    additionalProperties unevaluatedProperties propertyNames allOf anyOf oneOf not if then else
    $ref $dynamicRef $recursiveRef""".split()
)


def err(where: str, what: str) -> GrammarError:
    where = where or "/"
    if len(where) > 120:  # deep pointers are unreadable in a 400 body; keep both ends
        where = where[:60] + "..." + where[-57:]
    return GrammarError(f"json_schema: {what} at {where}")


class Resolver:
    """Resolves nodes of one root schema; ``stack`` holds the `$ref`s being expanded."""

    def __init__(self, root: object) -> None:
        self.root = root

    def flatten(self, node: object, where: str, stack: tuple[str, ...] = ()) -> dict:
        if node is True:
            return {REFS: stack}
        if node is False:
            return UNSAT
        if not isinstance(node, dict):
            raise err(where, f"a schema must be an object or a boolean, got {type(node).__name__}")
        flat = {k: v for k, v in node.items() if k in VALIDATION_KEYWORDS}
        flat = normalize_keywords(flat, where)
        flat[REFS] = stack
        parts: list[dict] = []
        ref = flat.pop("$ref", None)
        if ref is not None:
            if not isinstance(ref, str):
                raise err(where, "'$ref' must be a string")
            if ref in stack:
                raise err(where, f"recursive '$ref' {ref!r} is not supported")
            parts.append(self.flatten(self.lookup(ref, where), where, (*stack, ref)))
        all_of = flat.pop("allOf", None)
        if all_of is not None:
            if not isinstance(all_of, list) or not all_of:
                raise err(where, "'allOf' must be a non-empty array")
            for i, member in enumerate(all_of):
                parts.append(self.flatten(member, f"{where}/allOf/{i}", stack))
        result = flat
        for part in parts:
            result = merge(result, part, where)
        return result

    def lookup(self, ref: str, where: str) -> object:
        if not ref.startswith("#"):
            raise err(where, f"only local '$ref's ('#...') are supported, got {ref!r}")
        target = self.root
        for raw in [p for p in ref[1:].split("/") if p]:
            part = unquote(raw).replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                raise err(where, f"'$ref' {ref!r} does not resolve")
        return target


def normalize_keywords(flat: dict, where: str) -> dict:
    """One spelling per keyword: `const` as a one-value `enum`, `type` as a list, draft-04
    boolean exclusive bounds as numbers, draft-07 array `items` as `prefixItems`."""
    if "const" in flat:
        const = [flat.pop("const")]
        flat["enum"] = intersect_values(flat["enum"], const) if "enum" in flat else const
    if "enum" in flat and not isinstance(flat["enum"], list):
        raise err(where, "'enum' must be an array")
    if "type" in flat:
        types = flat["type"] if isinstance(flat["type"], list) else [flat["type"]]
        for name in types:
            if name not in _TYPE_NAMES:
                raise err(where, f"unsupported type {name!r}")
        flat["type"] = list(dict.fromkeys(types))
    for bound, excl in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(flat.get(excl), bool):
            if flat.pop(excl) and bound in flat:
                flat[excl] = flat.pop(bound)
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if key in flat:
            value = flat[key]
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                raise err(where, f"'{key}' must be a number")
    if isinstance(flat.get("items"), list):
        flat["prefixItems"] = flat.pop("items")
        if "additionalItems" in flat:
            flat["items"] = flat.pop("additionalItems")
    return flat


def json_equal(a: object, b: object) -> bool:
    # JSON equality: True is not 1, 1 equals 1.0.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return Fraction(a) == Fraction(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def intersect_values(a: list, b: list) -> list:
    return [x for x in a if any(json_equal(x, y) for y in b)]


def _types_meet(a: list, b: list) -> list:
    out = [t for t in a if t in b]
    # integer is a subtype of number.
    if "number" in a and "integer" in b and "integer" not in out:
        out.append("integer")
    if "integer" in a and "number" in b and "integer" not in out:
        out.append("integer")
    return out


def _all_of(a: object, b: object) -> object:
    if a is True or a == {}:
        return b
    if b is True or b == {}:
        return a
    if a is False or b is False:
        return False
    return {"allOf": [a, b]}


def merge(a: dict, b: dict, where: str) -> dict:
    """The intersection of two flat schemas (both accept a value iff the result does)."""
    if a is UNSAT or b is UNSAT:
        return UNSAT
    out = dict(a)
    for key, value in b.items():
        if key not in out or json_equal(out[key], value):
            out[key] = value
        elif key == "type":
            out["type"] = _types_meet(out["type"], value)
            if not out["type"]:
                return UNSAT
        elif key == "enum":
            out["enum"] = intersect_values(out["enum"], value)
            if not out["enum"]:
                return UNSAT
        elif key == REFS:
            out[REFS] = tuple(dict.fromkeys([*out[REFS], *value]))
        elif key == "required":
            out["required"] = list(dict.fromkeys([*out["required"], *value]))
        elif key in _LOWER_BOUNDS or key in ("minimum", "exclusiveMinimum"):
            out[key] = max(out[key], value)
        elif key in _UPPER_BOUNDS or key in ("maximum", "exclusiveMaximum"):
            out[key] = min(out[key], value)
        elif key == "uniqueItems":
            out[key] = bool(out[key]) or bool(value)
        elif key in ("items", "additionalProperties"):
            out[key] = _all_of(out[key], value)
        elif key in ("anyOf", "oneOf"):
            out[key] = [_all_of(x, y) for x in out[key] for y in value]
            if len(out[key]) > 64:
                raise err(
                    where, f"'{key}' in several 'allOf' members combines into too many branches"
                )
        elif key != "properties":
            raise err(where, f"'allOf' members with different '{key}' are not supported")
    if "properties" in a or "properties" in b:
        out["properties"] = _merge_properties(a, b)
    return out


def _merge_properties(a: dict, b: dict) -> dict:
    # A property only one side declares still meets the other side's additionalProperties.
    props: dict = {}
    props_a, props_b = a.get("properties", {}), b.get("properties", {})
    for name in list(props_a) + [n for n in props_b if n not in props_a]:
        side_a = props_a.get(name, a.get("additionalProperties", True))
        side_b = props_b.get(name, b.get("additionalProperties", True))
        props[name] = _all_of(side_a, side_b)
    return props
