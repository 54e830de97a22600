"""Lower a JSON schema to the subset outlines-core converts exactly (fail closed).

outlines-core's `build_regex_from_schema` silently ignores many keywords (numeric bounds,
siblings of `properties`/`anyOf`/`$ref`, `uniqueItems`, `not`, ...), treats `allOf` as
concatenation and `oneOf` as `anyOf`, and inlines `pattern`s raw (a `[^@]` class can then emit an
unescaped quote). So we never hand it a user schema: we rebuild each node from the keywords we
understand, emitting only constructs it handles exactly. A keyword that still constrains values
and that we cannot express raises GrammarError naming it and its JSON pointer. Numeric ranges,
patterns and formats are spliced in as regex "holes": placeholder consts replaced after conversion.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from radixlm.constrained import charset
from radixlm.constrained.formats import FORMAT_REGEXES
from radixlm.constrained.numeric_regex import integer_range, number_range
from radixlm.constrained.regex_translate import translate
from radixlm.constrained.schema_resolve import REFS, UNSAT, Resolver, err, json_equal, merge
from radixlm.constrained.spec import GrammarError

MAX_LOWERED_NODES = 20_000
# How deep outlines-core's "any JSON" containers (an object or array without a member schema)
# may nest: its index cost grows ~4x per level (every nested string is new DFA states walked
# against the whole vocabulary). One level at the root (`{"type": "object"}`, json_object mode),
# none below: nested unconstrained values are scalars or empty containers. Sound, not complete.
ROOT_GENERIC_DEPTH = 1
NESTED_GENERIC_DEPTH = 0
_REFUSED = ("not", "dependentSchemas", "contains", "minContains", "maxContains", "propertyNames")
_REFUSED += ("$dynamicRef", "$recursiveRef")
_IMPLIED_TYPES = (
    ("object", ("properties", "required", "additionalProperties", "patternProperties")),
    ("object", ("minProperties", "maxProperties")),
    ("array", ("items", "prefixItems", "minItems", "maxItems", "uniqueItems")),
    ("string", ("minLength", "maxLength", "pattern", "format")),
    ("number", ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")),
)
_ALL_TYPES = ["null", "boolean", "number", "string", "array", "object"]
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f-\x9f]')


class Unsatisfiable(Exception):
    """No value meets this node; callers drop the branch or property where the schema allows."""


class Lowering:
    def __init__(self, root: object, nonce: str) -> None:
        self.resolver = Resolver(root)
        self.nonce = nonce
        self.holes: dict[str, str] = {}
        self.num_nodes = 0

    def lower(self, node: object, where: str, stack: tuple[str, ...]) -> dict:
        return self.lower_flat(self.resolver.flatten(node, where, stack), where)

    def lower_flat(self, flat: dict, where: str) -> dict:
        self.num_nodes += 1
        if self.num_nodes > MAX_LOWERED_NODES:
            raise err(where, f"schema expands to more than {MAX_LOWERED_NODES} nodes")
        if flat is UNSAT:
            raise Unsatisfiable
        types = effective_types(flat)
        self.refuse(flat, types, where)
        if "oneOf" in flat or "anyOf" in flat:
            return self.lower_branches(flat, where)
        if "enum" in flat:
            return self.lower_enum(flat, types, where)
        # Never `{}`: outlines-core emits "any value" as an unparenthesised alternation, which
        # nested under a property admits texts like `{null}`; one branch per type is parenthesised.
        lowered = []
        for name in types:
            if name == "integer" and "number" in types:
                continue  # integers are numbers already
            try:
                lowered.append(self.lower_type(name, flat, where))
            except Unsatisfiable:
                continue
        return any_of(lowered)

    def refuse(self, flat: dict, types: list[str], where: str) -> None:
        for key in _REFUSED:
            if key in flat:
                raise err(where, f"unsupported keyword '{key}'")
        if "if" in flat and ("then" in flat or "else" in flat):
            raise err(where, "unsupported keyword 'if'")
        for key in ("dependencies", "dependentRequired"):
            if flat.get(key):
                raise err(where, f"unsupported keyword '{key}'")
        numeric = {"integer", "number"} & set(types)
        if (
            "multipleOf" in flat
            and numeric
            and not (flat["multipleOf"] == 1 and "number" not in types)
        ):
            raise err(where, "unsupported keyword 'multipleOf'")

    def lower_branches(self, flat: dict, where: str) -> dict:
        key = "oneOf" if "oneOf" in flat else "anyOf"
        branches = flat[key]
        if not isinstance(branches, list) or not branches:
            raise err(where, f"'{key}' must be a non-empty array")
        siblings = {k: v for k, v in flat.items() if k != key}
        merged = [
            merge(siblings, self.resolver.flatten(b, f"{where}/{key}/{i}", flat[REFS]), where)
            for i, b in enumerate(branches)
        ]
        if key == "oneOf":
            live = [m for m in merged if m is not UNSAT]
            for i, a in enumerate(live):
                for b in live[i + 1 :]:
                    if not self.disjoint(a, b, where):
                        raise err(where, "'oneOf' whose branches may overlap is not supported")
        lowered = []
        for i, branch in enumerate(merged):
            try:
                lowered.append(self.lower_flat(branch, f"{where}/{key}/{i}"))
            except Unsatisfiable:
                continue
        return any_of(lowered)

    def disjoint(self, a: dict, b: dict, where: str) -> bool:
        """True only when no value can satisfy both (types, enums or a discriminator property)."""
        ta, tb = effective_types(a), effective_types(b)
        if not any(t in tb or {t, *tb} >= {"integer", "number"} for t in ta):
            return True
        if "enum" in a and "enum" in b:
            return not any(json_equal(x, y) for x in a["enum"] for y in b["enum"])
        for name in set(a.get("required", [])) & set(b.get("required", [])):
            pa = self.resolver.flatten(a.get("properties", {}).get(name, True), where, a[REFS])
            pb = self.resolver.flatten(b.get("properties", {}).get(name, True), where, b[REFS])
            if pa is UNSAT or pb is UNSAT or self.disjoint(pa, pb, where):
                return True
        return False

    def lower_enum(self, flat: dict, types: list[str], where: str) -> dict:
        others = set(flat) - {"enum", "type", REFS}
        values = []
        for value in flat["enum"]:
            if isinstance(value, (dict, list)) and others:
                raise err(where, "'enum' of objects or arrays combined with other keywords")
            if value_type_ok(value, types) and scalar_ok(value, flat, where):
                values.append(value)
        if not values:
            raise Unsatisfiable
        return {"enum": values}

    def lower_type(self, name: str, flat: dict, where: str) -> dict:
        if name in ("null", "boolean"):
            return {"type": name}
        if name in ("integer", "number"):
            return self.lower_number(name, flat)
        if name == "string":
            return self.lower_string(flat, where)
        if name == "array":
            return self.lower_array(flat, where)
        return self.lower_object(flat, where)

    def hole(self, regex: str) -> dict:
        placeholder = f"RLMHOLE{self.nonce}N{len(self.holes)}"
        self.holes[placeholder] = regex
        return {"enum": [placeholder]}

    def lower_number(self, name: str, flat: dict) -> dict:
        lo, lo_excl, hi, hi_excl = bounds(flat)
        if lo is None and hi is None:
            return {"type": name}
        try:
            if name == "integer":
                int_lo = None if lo is None else (math.floor(lo) + 1 if lo_excl else math.ceil(lo))
                int_hi = None if hi is None else (math.ceil(hi) - 1 if hi_excl else math.floor(hi))
                return self.hole(integer_range(int_lo, int_hi))
            return self.hole(number_range(lo, lo_excl, hi, hi_excl))
        except ValueError:
            raise Unsatisfiable from None

    def lower_string(self, flat: dict, where: str) -> dict:
        sources = [k for k in ("pattern", "format") if k in flat]
        has_length = "minLength" in flat or "maxLength" in flat
        if len(sources) + has_length > 1:
            raise err(
                where,
                "combining "
                + ", ".join([*sources, "minLength/maxLength"][:2])
                + " is not supported",
            )
        if "pattern" in flat:
            if not isinstance(flat["pattern"], str):
                raise err(where, "'pattern' must be a string")
            body = translate(
                flat["pattern"],
                universe=charset.JSON_STRING_CHARS,
                search=True,
                where=f"json_schema: pattern at {where or '/'}",
            )
            return self.hole(f'"(?:{body})"')
        if "format" in flat:
            if flat["format"] not in FORMAT_REGEXES:
                raise err(where, f"unsupported format {flat['format']!r}")
            return self.hole(f'"(?:{FORMAT_REGEXES[flat["format"]]})"')
        if has_length:
            lo, hi = flat.get("minLength", 0), flat.get("maxLength")
            if hi is not None and lo > hi:
                raise Unsatisfiable
            return {
                "type": "string",
                "minLength": lo,
                **({"maxLength": hi} if hi is not None else {}),
            }
        return {"type": "string"}

    def lower_array(self, flat: dict, where: str) -> dict:
        lo, hi = flat.get("minItems", 0), flat.get("maxItems")
        if hi is not None and lo > hi:
            raise Unsatisfiable
        if flat.get("uniqueItems") and (hi is None or hi > 1):
            raise err(where, "unsupported keyword 'uniqueItems'")
        if "prefixItems" in flat:
            # outlines emits exactly len(prefixItems) items; trim to maxItems, refuse if too few.
            prefix = flat["prefixItems"][: hi if hi is not None else None]
            if lo > len(prefix):
                raise err(where, "'minItems' beyond 'prefixItems' is not supported")
            items = [
                self.lower(p, f"{where}/prefixItems/{i}", flat[REFS]) for i, p in enumerate(prefix)
            ]
            return {"prefixItems": items}
        if flat.get("unevaluatedItems", True) not in (True, {}) and "items" not in flat:
            raise err(where, "unsupported keyword 'unevaluatedItems'")
        out: dict = {"type": "array", "minItems": lo, "depth": generic_depth(where)}
        if hi is not None:
            out["maxItems"] = hi
        if "items" in flat:
            try:
                out["items"] = self.lower(flat["items"], f"{where}/items", flat[REFS])
            except Unsatisfiable:
                if lo > 0:
                    raise
                out["maxItems"] = 0
        return out

    def lower_object(self, flat: dict, where: str) -> dict:
        props = dict(flat.get("properties", {}))
        required = list(flat.get("required", []))
        extra = flat.get("additionalProperties", True)
        patterns = flat.get("patternProperties", {})
        lo, hi = flat.get("minProperties", 0), flat.get("maxProperties")
        if not props and not required:
            if patterns:
                raise err(where, "unsupported keyword 'patternProperties'")
            if flat.get("unevaluatedProperties", True) not in (True, {}):
                raise err(where, "unsupported keyword 'unevaluatedProperties'")
            if extra is False:
                if lo > 0:
                    raise Unsatisfiable
                return {"type": "object", "maxProperties": 0}
            out: dict = {"type": "object", "minProperties": lo, "depth": generic_depth(where)}
            if hi is not None:
                out["maxProperties"] = hi
            if extra not in (True, {}):
                out["additionalProperties"] = self.lower(
                    extra, f"{where}/additionalProperties", flat[REFS]
                )
            return out
        for name in required:
            if name not in props:
                if extra is False:
                    raise Unsatisfiable
                props[name] = extra
        lowered: dict = {}
        for name, sub in props.items():
            if _NEEDS_ESCAPE.search(name):
                raise err(where, f"property name {name!r} needs JSON escaping; not supported")
            schema = [sub, *matching_patterns(name, patterns, where)]
            try:
                lowered[name] = self.lower(
                    {"allOf": schema}, f"{where}/properties/{name}", flat[REFS]
                )
            except Unsatisfiable:
                if name in required:
                    raise
        required = [n for n in required if n in lowered]
        # outlines emits only declared properties; the counts must hold whatever it picks.
        if lo > len(required):
            raise err(
                where, "'minProperties' above the number of required properties is not supported"
            )
        if hi is not None and hi < len(lowered):
            raise err(where, "'maxProperties' below the number of properties is not supported")
        return {"type": "object", "properties": lowered, "required": required}


def matching_patterns(name: str, patterns: dict, where: str) -> list:
    out = []
    for pattern, schema in patterns.items():
        try:
            unicode_hit = re.search(pattern, name) is not None
            ascii_hit = re.search(pattern, name, re.ASCII) is not None
        except re.error as exc:
            raise err(where, f"invalid patternProperties regex {pattern!r}: {exc}") from exc
        if unicode_hit != ascii_hit:
            raise err(where, f"patternProperties regex {pattern!r} is ambiguous for {name!r}")
        if unicode_hit:
            out.append(schema)
    return out


def generic_depth(where: str) -> int:
    return ROOT_GENERIC_DEPTH if where == "" else NESTED_GENERIC_DEPTH


def any_of(lowered: list[dict]) -> dict:
    if not lowered:
        raise Unsatisfiable
    return lowered[0] if len(lowered) == 1 else {"anyOf": lowered}


def effective_types(flat: dict) -> list[str]:
    if "type" in flat:
        return list(flat["type"])
    implied = [t for t, keys in _IMPLIED_TYPES if any(k in flat for k in keys)]
    return list(dict.fromkeys(implied)) or list(_ALL_TYPES)


def bounds(flat: dict) -> tuple[Fraction | None, bool, Fraction | None, bool]:
    lo, lo_excl, hi, hi_excl = None, False, None, False
    if "minimum" in flat:
        lo = Fraction(flat["minimum"])
    if "exclusiveMinimum" in flat and (lo is None or Fraction(flat["exclusiveMinimum"]) >= lo):
        lo, lo_excl = Fraction(flat["exclusiveMinimum"]), True
    if "maximum" in flat:
        hi = Fraction(flat["maximum"])
    if "exclusiveMaximum" in flat and (hi is None or Fraction(flat["exclusiveMaximum"]) <= hi):
        hi, hi_excl = Fraction(flat["exclusiveMaximum"]), True
    return lo, lo_excl, hi, hi_excl


def value_type_ok(value: object, types: list[str]) -> bool:
    if value is None:
        return "null" in types
    if isinstance(value, bool):
        return "boolean" in types
    if isinstance(value, (int, float)):
        return "number" in types or ("integer" in types and float(value).is_integer())
    if isinstance(value, str):
        return "string" in types
    return ("array" if isinstance(value, list) else "object") in types


def scalar_ok(value: object, flat: dict, where: str) -> bool:
    """Whether an enum value meets the scalar keywords beside the enum (exactly, or refuse)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, lo_excl, hi, hi_excl = bounds(flat)
        x = Fraction(value)
        return (lo is None or (x > lo if lo_excl else x >= lo)) and (
            hi is None or (x < hi if hi_excl else x <= hi)
        )
    if isinstance(value, str):
        if not flat.get("minLength", 0) <= len(value) <= flat.get("maxLength", len(value)):
            return False
        if "format" in flat:
            if flat["format"] not in FORMAT_REGEXES:
                raise err(where, f"unsupported format {flat['format']!r}")
            return re.fullmatch(FORMAT_REGEXES[flat["format"]], value) is not None
        if "pattern" in flat:
            return bool(matching_patterns(value, {flat["pattern"]: True}, where))
    return True


def lower_schema(schema: object, nonce: str) -> tuple[dict, dict[str, str]]:
    """(outlines-safe schema, holes: placeholder -> regex). Raises GrammarError."""
    lowering = Lowering(schema, nonce)
    try:
        lowered = lowering.lower(schema, "", ())
    except Unsatisfiable:
        raise GrammarError("json_schema: the schema admits no value") from None
    except RecursionError:
        raise GrammarError("json_schema: the schema nests too deeply") from None
    return lowered, lowering.holes
