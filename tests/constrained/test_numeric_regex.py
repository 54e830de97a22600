"""Numeric-bound regexes: exact for integers, sound for numbers (checked with Fraction)."""

from __future__ import annotations

import re
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from radixlm.constrained.numeric_regex import integer_range, number_range

bounds = st.one_of(st.none(), st.integers(-2000, 2000))


@settings(max_examples=150, deadline=None)
@given(lo=bounds, hi=bounds, n=st.integers(-3000, 3000))
def test_integer_range_is_exact(lo: int | None, hi: int | None, n: int) -> None:
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    regex = re.compile(integer_range(lo, hi))
    inside = (lo is None or n >= lo) and (hi is None or n <= hi)
    assert bool(regex.fullmatch(str(n))) == inside
    assert not regex.fullmatch("0" + str(abs(n) or 1)), "leading zeros are not JSON"


fractions = st.one_of(st.none(), st.fractions(min_value=-500, max_value=500, max_denominator=8))
numbers = st.one_of(
    st.integers(-600, 600).map(str),
    st.decimals(-600, 600, places=3, allow_nan=False, allow_infinity=False).map(str),
)


@settings(max_examples=150, deadline=None)
@given(lo=fractions, lo_excl=st.booleans(), hi=fractions, hi_excl=st.booleans(), text=numbers)
def test_number_range_never_admits_out_of_bounds(lo, lo_excl, hi, hi_excl, text) -> None:
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    try:
        regex = re.compile(number_range(lo, lo_excl, hi, hi_excl))
    except ValueError:
        return  # an empty range is refused as unsatisfiable
    if regex.fullmatch(text):
        x = Fraction(text)
        assert lo is None or (x > lo if lo_excl else x >= lo)
        assert hi is None or (x < hi if hi_excl else x <= hi)


def test_number_range_admits_typical_values() -> None:
    regex = re.compile(number_range(Fraction(0), False, Fraction(100), False))
    for text in ("0", "0.5", "99.99", "100", "42"):
        assert regex.fullmatch(text), text
    for text in ("-1", "100.5", "101", "-0.5"):
        assert not regex.fullmatch(text), text
