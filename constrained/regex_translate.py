"""Translate a user regex (Python / ECMA-262 syntax) into an explicit Rust-regex string.

Every construct is re-emitted from the parse tree: classes become explicit code-point ranges
(charset.py), groups become non-capturing, anchors are only accepted where they mean "start" or
"end" of the whole text. What cannot be expressed as a regular language (lookarounds,
backreferences, conditionals, atomic groups, possessive repeats) or whose meaning differs between
dialects (inline flags) is refused with a GrammarError, never approximated.
"""

from __future__ import annotations

try:  # Python >= 3.11 keeps the parser here; `sre_parse` is its deprecated alias.
    from re import _constants as sre_c
    from re import _parser as sre_parse
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as sre_c  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

from radixlm.constrained import charset
from radixlm.constrained.spec import GrammarError

_START_ANCHORS = {sre_c.AT_BEGINNING, sre_c.AT_BEGINNING_STRING}
_END_ANCHORS = {sre_c.AT_END, sre_c.AT_END_STRING}
_CATEGORIES = {
    sre_c.CATEGORY_DIGIT: charset.ASCII_DIGITS,
    sre_c.CATEGORY_WORD: charset.ASCII_WORD,
    sre_c.CATEGORY_SPACE: charset.ECMA_SPACE,
}
_NEGATED = {
    sre_c.CATEGORY_NOT_DIGIT: "digit",
    sre_c.CATEGORY_NOT_WORD: "word",
    sre_c.CATEGORY_NOT_SPACE: "space",
}
_REFUSED = {
    sre_c.ASSERT: "lookaround assertions",
    sre_c.ASSERT_NOT: "lookaround assertions",
    sre_c.GROUPREF: "backreferences",
    sre_c.GROUPREF_EXISTS: "conditional groups",
}
_OPTIONAL_OPS = {"ATOMIC_GROUP": "atomic groups", "POSSESSIVE_REPEAT": "possessive repeats"}


def translate(pattern: str, *, universe: charset.Ranges, search: bool, where: str) -> str:
    """The regex (no anchors) whose full matches are the strings ``pattern`` accepts.

    ``universe`` bounds every class (e.g. characters allowed raw in a JSON string).
    ``search=True`` gives JSON Schema `pattern` semantics: unanchored ends may be surrounded by
    any text of the universe. ``where`` prefixes error messages (e.g. "json_schema: /properties/x").
    """
    try:
        tree = sre_parse.parse(pattern)
    except (sre_c.error, OverflowError, RecursionError) as exc:
        raise GrammarError(f"{where}: invalid regex {pattern!r}: {exc}") from exc
    if tree.state.flags & ~(sre_c.SRE_FLAG_UNICODE):
        raise GrammarError(f"{where}: inline regex flags are not supported in {pattern!r}")
    return _Emitter(universe, pattern, where, search).seq(list(tree), start=True, end=True)


class _Emitter:
    """Emits a parse tree. ``start``/``end`` say a node touches the start/end of the whole text:
    only there may an anchor stand, and there (in search mode) unanchored text gets padding."""

    def __init__(self, universe: charset.Ranges, pattern: str, where: str, search: bool) -> None:
        self.universe = universe
        self.pattern = pattern
        self.where = where
        self.pad = f"{charset.to_regex(universe)}*" if search else ""

    def fail(self, what: str) -> GrammarError:
        return GrammarError(f"{self.where}: {what} are not supported in regex {self.pattern!r}")

    def seq(self, items: list, start: bool = False, end: bool = False) -> str:
        if not items:
            return self.pad if start or end else ""
        last = len(items) - 1
        return "".join(
            self.node(op, av, start and i == 0, end and i == last)
            for i, (op, av) in enumerate(items)
        )

    def node(self, op: object, av: object, start: bool, end: bool) -> str:
        if op is sre_c.AT:
            if (av in _START_ANCHORS and start) or (av in _END_ANCHORS and end):
                # The anchor pins this boundary; the other one (`^` alone) still gets padding.
                return self.pad if start and end else ""
            raise self.fail("anchors other than a leading ^ or a trailing $")
        if op is sre_c.BRANCH:
            return "(?:" + "|".join(self.seq(list(s), start, end) for s in av[1]) + ")"
        if op is sre_c.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            if add_flags or del_flags:
                raise self.fail("inline flags")
            return f"(?:{self.seq(list(sub), start, end)})"
        return (self.pad if start else "") + self.atom(op, av) + (self.pad if end else "")

    def atom(self, op: object, av: object) -> str:
        if op is sre_c.LITERAL:
            return self.cls(((av, av),))
        if op is sre_c.NOT_LITERAL:
            return self.cls(charset.complement(((av, av),)))
        if op is sre_c.ANY:
            return self.cls(charset.complement(charset.LINE_TERMINATORS))
        if op is sre_c.IN:
            return self.cls(self.in_set(av))
        if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT):
            # Laziness does not change which strings fully match, so both are the same language.
            lo, hi, sub = av
            inner = f"(?:{self.seq(list(sub))})"
            if hi == sre_c.MAXREPEAT:
                return inner + ("*" if lo == 0 else "+" if lo == 1 else f"{{{lo},}}")
            return inner + ("?" if (lo, hi) == (0, 1) else f"{{{lo},{hi}}}")
        if op in _REFUSED:
            raise self.fail(_REFUSED[op])
        raise self.fail(_OPTIONAL_OPS.get(str(op), f"{op} constructs"))

    def in_set(self, items: list) -> charset.Ranges:
        negate = bool(items) and items[0][0] is sre_c.NEGATE
        ranges: list[tuple[int, int]] = []
        for op, av in items[1 if negate else 0 :]:
            if op is sre_c.LITERAL:
                ranges.append((av, av))
            elif op is sre_c.RANGE:
                ranges.append(av)
            elif op is sre_c.CATEGORY and av in _CATEGORIES:
                ranges.extend(_CATEGORIES[av])
            elif op is sre_c.CATEGORY and av in _NEGATED:
                ranges.extend(charset.complement(charset.python_unicode_class(_NEGATED[av])))
            else:
                raise self.fail(f"class item {op} {av}")
        members = charset.normalize(ranges)
        return charset.complement(members) if negate else members

    def cls(self, ranges: charset.Ranges) -> str:
        allowed = charset.intersect(charset.normalize(ranges), self.universe)
        if not allowed:
            raise GrammarError(
                f"{self.where}: a character class in regex {self.pattern!r} can never match here"
            )
        return charset.to_regex(allowed)
