"""The regex translator against Python's `re` (the naive reference), on random strings."""

from __future__ import annotations

import functools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radixlm.constrained import GrammarError, charset
from radixlm.constrained.regex_translate import translate
from tests.constrained.conftest import python_regex

PATTERNS = [
    r"[a-c]+x?",
    r"(ab|a)c*",
    r"\d{2,3}-\w",
    r"[^b-y]+",
    r"a.b",
    r"\D\S\W",
    r"^ab|c$",
    r"(?:a|bc){1,3}",
    r"[\s\d]?z",
]
ALPHABET = 'abcxyz019-_ \n"\\é٣'


@functools.cache
def compiled(pattern: str, search: bool) -> re.Pattern:
    universe = charset.JSON_STRING_CHARS if search else charset.ALL_CHARS
    return re.compile(python_regex(translate(pattern, universe=universe, search=search, where="t")))


@pytest.mark.parametrize("pattern", PATTERNS)
@settings(max_examples=80, deadline=None)
@given(text=st.text(alphabet=ALPHABET, max_size=6))
def test_fullmatch_mode_is_a_sound_subset_of_python(pattern: str, text: str) -> None:
    ours = compiled(pattern, False)
    if ours.fullmatch(text):
        assert re.fullmatch(pattern, text), (pattern, text)
    # On ASCII text without line breaks the two dialects agree exactly.
    if text.isascii() and "\n" not in text:
        assert bool(ours.fullmatch(text)) == bool(re.fullmatch(pattern, text)), (pattern, text)


@pytest.mark.parametrize("pattern", PATTERNS)
@settings(max_examples=80, deadline=None)
@given(text=st.text(alphabet=ALPHABET, max_size=6))
def test_search_mode_in_json_strings_is_sound(pattern: str, text: str) -> None:
    if compiled(pattern, True).fullmatch(text):
        assert re.search(pattern, text), (pattern, text)
        assert not set(text) & set('"\\\n'), "a JSON-string pattern emitted a char needing escape"


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(", "invalid regex"),
        ("(?=a)b", "lookaround"),
        ("(?<!a)b", "lookaround"),
        (r"(a)\1", "backreferences"),
        ("(?i)a", "inline"),
        ("a^b", "anchors"),
        ("(a)?(?(1)b|c)", "conditional"),
    ],
)
def test_unsupported_constructs_are_refused(pattern: str, message: str) -> None:
    with pytest.raises(GrammarError, match=message):
        translate(pattern, universe=charset.ALL_CHARS, search=False, where="regex")


def test_class_that_cannot_match_inside_a_json_string_is_refused() -> None:
    with pytest.raises(GrammarError, match="never match"):
        translate('["]', universe=charset.JSON_STRING_CHARS, search=False, where="p")
