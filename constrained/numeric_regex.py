"""Regexes for JSON integers and numbers within bounds (JSON Schema minimum/maximum/exclusive*).

outlines-core drops numeric bounds silently; these regexes enforce them exactly for integers and
soundly for numbers (a number regex may refuse some valid values, e.g. exponents, but never
admits one outside the bounds). Bounds are exact rationals (Fraction), never floats.
"""

from __future__ import annotations

import math
from fractions import Fraction

FRACTION_NONZERO = r"\.[0-9]*[1-9][0-9]*"


def _same_length_range(lo: str, hi: str) -> str:
    """Digit strings of equal length between lo and hi (inclusive), leading zeros allowed."""
    if lo == hi:
        return lo
    if len(lo) == 1:
        return f"[{lo}-{hi}]"
    if lo[0] == hi[0]:
        return lo[0] + _paren(_same_length_range(lo[1:], hi[1:]))
    rest = len(lo) - 1
    parts: list[str] = []
    # lo[0] followed by the top of lo's tail, then the full middle digits, then hi's head.
    if lo[1:] == "0" * rest:
        first_full = int(lo[0])
    else:
        parts.append(lo[0] + _paren(_same_length_range(lo[1:], "9" * rest)))
        first_full = int(lo[0]) + 1
    if hi[1:] == "9" * rest:
        last_full = int(hi[0])
    else:
        last_full = int(hi[0]) - 1
    if first_full <= last_full:
        digit = str(first_full) if first_full == last_full else f"[{first_full}-{last_full}]"
        parts.append(f"{digit}[0-9]{{{rest}}}")
    if hi[1:] != "9" * rest:
        parts.append(hi[0] + _paren(_same_length_range("0" * rest, hi[1:])))
    return "|".join(parts)


def _paren(regex: str) -> str:
    return f"(?:{regex})" if "|" in regex else regex


def natural_range(lo: int, hi: int | None) -> str:
    """Decimal naturals n with lo <= n <= hi (hi None = unbounded), no leading zeros."""
    assert lo >= 0 and (hi is None or hi >= lo)
    parts: list[str] = []
    if lo == 0:
        parts.append("0")
        lo = 1
    digits = len(str(lo))
    top = hi if hi is not None else 10**digits - 1
    while lo <= top:
        width_max = min(top, 10 ** len(str(lo)) - 1)
        parts.append(_paren(_same_length_range(str(lo), str(width_max))))
        lo = width_max + 1
    if hi is None:
        parts.append(f"[1-9][0-9]{{{digits},}}")
    return "(?:" + "|".join(parts) + ")"


def integer_range(lo: int | None, hi: int | None) -> str:
    """JSON integers n with lo <= n <= hi (either side may be open)."""
    if lo is not None and hi is not None and lo > hi:
        raise ValueError("empty integer range")
    parts: list[str] = []
    if hi is None or hi >= 0:
        parts.append(natural_range(0 if lo is None else max(lo, 0), hi))
    if lo is None or lo < 0:
        # Negative side as '-' and a magnitude in [max(1, -hi), -lo].
        mag_lo = max(1, -hi) if hi is not None else 1
        parts.append("-" + natural_range(mag_lo, -lo if lo is not None else None))
    return "(?:" + "|".join(parts) + ")"


def number_range(
    lo: Fraction | None, lo_exclusive: bool, hi: Fraction | None, hi_exclusive: bool
) -> str:
    """JSON numbers within the bounds, without exponents (a sound subset).

    Three disjoint families: integers in range, positive non-integers `N.F` whose whole open
    interval (N, N+1) lies within the bounds, and negative non-integers `-N.F` likewise.
    """
    int_lo = None if lo is None else (math.floor(lo) + 1 if lo_exclusive else math.ceil(lo))
    int_hi = None if hi is None else (math.ceil(hi) - 1 if hi_exclusive else math.floor(hi))
    parts: list[str] = []
    if int_lo is None or int_hi is None or int_lo <= int_hi:
        parts.append(integer_range(int_lo, int_hi))
    # x in (N, N+1) for N >= 0 needs N >= lo and N + 1 <= hi.
    pos_lo = 0 if lo is None else max(0, math.ceil(lo))
    pos_hi = None if hi is None else math.floor(hi) - 1
    if pos_hi is None or pos_lo <= pos_hi:
        parts.append(natural_range(pos_lo, pos_hi) + FRACTION_NONZERO)
    # x in (-(N+1), -N) for N >= 0 needs -(N+1) >= lo and -N <= hi.
    neg_lo = 0 if hi is None else max(0, math.ceil(-hi))
    neg_hi = None if lo is None else math.floor(-lo) - 1
    if neg_hi is None or neg_lo <= neg_hi:
        parts.append("-" + natural_range(neg_lo, neg_hi) + FRACTION_NONZERO)
    if not parts:
        raise ValueError("empty number range")
    return "(?:" + "|".join(parts) + ")"
