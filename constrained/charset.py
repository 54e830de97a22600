"""Code-point sets as sorted, disjoint, inclusive ranges: the character classes of our regexes.

Keeping classes explicit (instead of copying `\\d`, `.` or `[^...]` through) is what makes the
translated regex mean the same thing to every engine: Python's `re`, ECMA-262 (JSON Schema
`pattern`) and Rust's `regex` disagree on `\\d`, `\\w`, `.` and on what a negated class may match.
"""

from __future__ import annotations

import functools

Ranges = tuple[tuple[int, int], ...]

MAX_CODE_POINT = 0x10FFFF
# Surrogates are not characters: no engine can emit one as UTF-8.
ALL_CHARS: Ranges = ((0, 0xD7FF), (0xE000, MAX_CODE_POINT))
# Inside a JSON string only these may appear raw: quote, backslash and controls need escapes,
# and C1 controls (0x7F-0x9F) are excluded the way outlines-core's STRING_INNER excludes them.
JSON_STRING_CHARS: Ranges = (
    (0x20, 0x21),
    (0x23, 0x5B),
    (0x5D, 0x7E),
    (0xA0, 0xD7FF),
    (0xE000, MAX_CODE_POINT),
)
# What `.` matches: ECMA-262 excludes every line terminator, Python only `\n`; we take the
# intersection so a match is a match under both.
LINE_TERMINATORS: Ranges = ((0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029))
ASCII_DIGITS: Ranges = ((0x30, 0x39),)
ASCII_WORD: Ranges = ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))
ECMA_SPACE: Ranges = (
    (0x09, 0x0D),
    (0x20, 0x20),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
    (0xFEFF, 0xFEFF),
)


def normalize(ranges: list[tuple[int, int]] | Ranges) -> Ranges:
    """Sort and merge overlapping or adjacent ranges."""
    merged: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return tuple((lo, hi) for lo, hi in merged)


def union(a: Ranges, b: Ranges) -> Ranges:
    return normalize(list(a) + list(b))


def intersect(a: Ranges, b: Ranges) -> Ranges:
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def complement(a: Ranges, universe: Ranges = ALL_CHARS) -> Ranges:
    out: list[tuple[int, int]] = []
    start = 0
    for lo, hi in normalize(a):
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= MAX_CODE_POINT:
        out.append((start, MAX_CODE_POINT))
    return intersect(tuple(out), universe)


@functools.cache
def python_unicode_class(name: str) -> Ranges:
    """Python's Unicode `\\d`, `\\w` or `\\s` (a superset of the ECMA class): the negated
    classes are complements of these, so `\\D` never admits a digit Python would reject."""
    test = {
        "digit": str.isdecimal,
        "word": lambda c: c.isalnum() or c == "_",
        "space": str.isspace,
    }[name]
    out: list[tuple[int, int]] = []
    for cp in range(MAX_CODE_POINT + 1):
        if 0xD800 <= cp <= 0xDFFF or not test(chr(cp)):
            continue
        if out and out[-1][1] == cp - 1:
            out[-1] = (out[-1][0], cp)
        else:
            out.append((cp, cp))
    return tuple(out)


def _char(cp: int) -> str:
    if chr(cp).isascii() and chr(cp).isalnum():
        return chr(cp)
    return f"\\x{{{cp:X}}}"


def to_regex(ranges: Ranges) -> str:
    """A Rust-regex class for a non-empty set (`\\x{..}` escapes; also valid for llguidance)."""
    assert ranges, "empty character class"
    if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
        return _char(ranges[0][0])
    parts = [_char(lo) if lo == hi else f"{_char(lo)}-{_char(hi)}" for lo, hi in ranges]
    return "[" + "".join(parts) + "]"
