"""Jump-forward against a naive reference built from masks alone.

For every state a walk visits: (a) the un-jumped matcher allows each jumped token in turn;
(b) the jumped bytes are forced (a prefix of the bytes every continuation shares); (c) each
jumped token is the longest allowed token that is a prefix of the rest of the forced text (the
documented canonical choice); (d) from no jumped-token boundary does an allowed token run past
the forced text (the hold-back rule). Plus: jumped tokens equal the real tokenizer's on JSON.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from radixlm.constrained import GrammarError, GrammarSpec
from tests.constrained.conftest import DATA_DIR


def replay(grammar, tokens: list[int]):
    matcher = grammar.new_matcher()
    for token in tokens:
        matcher.accept_token(token)
    return matcher


def allowed_ids(matcher, vocab) -> list[int]:
    mask = np.zeros(vocab.vocab_size, dtype=bool)
    matcher.fill_allowed_mask(mask)
    mask[list(vocab.eos_token_ids)] = False
    return np.flatnonzero(mask).tolist()


def naive_forced_bytes(grammar, prefix: list[int], vocab) -> bytes:
    forced = bytearray()
    matcher = replay(grammar, prefix)
    while len(forced) < 256 and not matcher.is_accepting():
        first = {vocab.token_bytes[t][0] for t in allowed_ids(matcher, vocab)}
        if len(first) != 1:
            break
        forced.append(first.pop())
        matcher.accept_token(vocab.token_bytes.index(bytes(forced[-1:])))
    return bytes(forced)


def check_jump(grammar, prefix: list[int], vocab) -> list[int]:
    jumped = replay(grammar, prefix).jump_forward_tokens()
    if not jumped:
        return jumped
    forced = naive_forced_bytes(grammar, prefix, vocab)
    matcher = replay(grammar, prefix)
    pos = 0
    for token in jumped:
        allowed = allowed_ids(matcher, vocab)
        assert token in allowed, "(a) jumped a token the matcher would refuse"
        data = vocab.token_bytes[token]
        rest = forced[pos:]
        assert rest.startswith(data), "(b) jumped bytes that are not forced"
        longest = max(
            len(vocab.token_bytes[t]) for t in allowed if rest.startswith(vocab.token_bytes[t])
        )
        assert len(data) == longest, "(c) not the longest-match token"
        spanning = [
            t
            for t in allowed
            if vocab.token_bytes[t].startswith(rest) and len(vocab.token_bytes[t]) > len(rest)
        ]
        assert not spanning, "(d) an allowed token runs past the forced text"
        matcher.accept_token(token)
        pos += len(data)
    return jumped


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "role": {"enum": ["admin", "user"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["name", "age", "role", "tags"],
}


@pytest.mark.parametrize("compact", [False, True])
def test_random_walk_jumps_match_the_naive_reference(
    outlines_backend, outlines_compact_backend, vocab, compact
) -> None:
    backend = outlines_compact_backend if compact else outlines_backend
    grammar = backend.compile(GrammarSpec.from_schema(SCHEMA))
    rng = np.random.default_rng(7)
    num_jumped = 0
    for _walk in range(3):
        taken: list[int] = []
        matcher = grammar.new_matcher()
        for _step in range(60):
            num_jumped += len(check_jump(grammar, taken, vocab))
            if matcher.is_terminated():
                break
            allowed = allowed_ids(matcher, vocab)
            # Prefer short tokens so walks pass through many states.
            weights = np.array([1.0 / len(vocab.token_bytes[t]) ** 3 for t in allowed])
            token = int(rng.choice(allowed, p=weights / weights.sum()))
            matcher.accept_token(token)
            taken.append(token)
    assert num_jumped > 0, "the schema's forced keys should produce jumps"


def canonical_agreement(grammar, text: str, tokenizer) -> tuple[int, int]:
    """(jumped tokens equal to the tokenizer's next tokens, jumped tokens) along ``text``."""
    ids = tokenizer.encode(text)
    matcher = grammar.new_matcher()
    agree = total = 0
    for i, token in enumerate(ids):
        jumped = matcher.jump_forward_tokens()
        total += len(jumped)
        agree += len(jumped) if ids[i : i + len(jumped)] == jumped else 0
        matcher.accept_token(token)
    return agree, total


def test_jumped_tokens_are_what_the_tokenizer_produces(
    outlines_backend, outlines_compact_backend, hf_tokenizer
) -> None:
    files = ["Glaiveai2K", "JME", "Synthesized", "Handwritten"]
    agree = total = 0
    for group in files:
        for path in sorted((DATA_DIR / group).glob("*.json"))[:2]:
            case = json.loads(path.read_text())
            valid = [t["data"] for t in case["tests"] if t["valid"]]
            if not valid:
                continue
            for compact, backend in ((False, outlines_backend), (True, outlines_compact_backend)):
                try:
                    grammar = backend.compile(GrammarSpec.from_schema(case["schema"]))
                except GrammarError:  # refused schemas are covered by the coverage test
                    continue
                text = json.dumps(valid[0], separators=(",", ":") if compact else (", ", ": "))
                try:
                    a, t = canonical_agreement(grammar, text, hf_tokenizer)
                except GrammarError:
                    continue  # an instance our grammar rejects (key order etc.)
                agree, total = agree + a, total + t
    print(f"jumped tokens equal to the tokenizer's: {agree}/{total}")
    assert total > 30
    assert agree / total >= 0.95, f"only {agree}/{total} jumped tokens match the tokenizer"
