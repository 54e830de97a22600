"""The outlines matcher on the real SmolLM2 vocabulary: random walks through random regexes."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radixlm.constrained import GrammarError, GrammarSpec

ATOMS = ["abc", "[a-c]", r"\d", "x", " ", "[A-Z]", "é", "-", r"\{", '"']
regexes = st.recursive(
    st.sampled_from(ATOMS),
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda p: p[0] + p[1]),
        st.tuples(inner, inner).map(lambda p: f"(?:{p[0]}|{p[1]})"),
        inner.map(lambda r: f"(?:{r})?"),
        st.tuples(inner, st.integers(1, 3)).map(lambda p: f"(?:{p[0]}){{1,{p[1]}}}"),
        inner.map(lambda r: f"(?:{r})*"),
    ),
    max_leaves=6,
)


def text_of(vocab, token_ids: list[int]) -> str:
    return b"".join(vocab.token_bytes[t] for t in token_ids).decode("utf-8")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pattern=regexes, seed=st.integers(0, 2**32 - 1))
def test_random_walks_end_in_full_matches(outlines_backend, vocab, pattern: str, seed: int) -> None:
    grammar = outlines_backend.compile(GrammarSpec("regex", pattern))
    rng = np.random.default_rng(seed)
    eos = vocab.eos_token_ids[0]
    for _walk in range(3):
        matcher = grammar.new_matcher()
        mask = np.zeros(vocab.vocab_size, dtype=bool)
        taken: list[int] = []
        for _step in range(30):
            matcher.fill_allowed_mask(mask)
            assert mask[eos] == matcher.is_accepting()
            assert not mask[len(vocab.token_bytes) :].any(), "padding ids must never be allowed"
            allowed = np.flatnonzero(mask)
            assert allowed.size, "a live state always allows something"
            # A token outside the mask is refused and leaves the matcher where it was.
            refused = int(rng.choice(np.flatnonzero(~mask[: len(vocab.token_bytes)])))
            with pytest.raises(GrammarError):
                matcher.accept_token(refused)
            token = int(rng.choice(allowed))
            matcher.accept_token(token)
            if token == eos:
                break
            taken.append(token)
            if matcher.is_terminated():
                break
        if matcher.is_accepting():
            assert re.fullmatch(pattern, text_of(vocab, taken)), (pattern, taken)


def test_eos_only_when_accepting_and_terminated_after(outlines_backend, vocab) -> None:
    grammar = outlines_backend.compile(GrammarSpec("choices", '["yes", "no"]'))
    matcher = grammar.new_matcher()
    eos = vocab.eos_token_ids[0]
    with pytest.raises(GrammarError):
        matcher.accept_token(eos)
    yes = [vocab.token_bytes.index(b"yes")]
    matcher.accept_token(yes[0])
    assert matcher.is_accepting() and matcher.is_terminated()
    mask = np.zeros(vocab.vocab_size, dtype=bool)
    matcher.fill_allowed_mask(mask)
    assert np.flatnonzero(mask).tolist() == [eos]
    matcher.accept_token(eos)
    with pytest.raises(GrammarError):
        matcher.accept_token(yes[0])


def test_special_tokens_never_allowed_inside_strings(outlines_backend, vocab, hf_tokenizer) -> None:
    grammar = outlines_backend.compile(GrammarSpec("json_schema", '{"type": "string"}'))
    matcher = grammar.new_matcher()
    matcher.accept_token(vocab.token_bytes.index(b'"'))
    mask = np.zeros(vocab.vocab_size, dtype=bool)
    matcher.fill_allowed_mask(mask)
    assert mask.sum() > 40_000, "string content admits most of the vocabulary"
    for name in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert not mask[hf_tokenizer.convert_tokens_to_ids(name)], name


def test_mask_fill_is_fast(outlines_backend, vocab) -> None:
    import time

    grammar = outlines_backend.compile(GrammarSpec("json_schema", '{"type": "string"}'))
    matcher = grammar.new_matcher()
    matcher.accept_token(vocab.token_bytes.index(b'"'))
    mask = np.zeros(vocab.vocab_size, dtype=bool)
    matcher.fill_allowed_mask(mask)  # first fill of a state fills the cache
    start = time.perf_counter()
    for _ in range(200):
        matcher.fill_allowed_mask(mask)
    per_call = (time.perf_counter() - start) / 200
    assert per_call < 2e-3, f"{per_call * 1e6:.0f} us per mask: not vectorised?"
