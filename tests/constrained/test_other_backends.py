"""The llguidance and xgrammar wrappers honour the same contract as the outlines backend."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from radixlm.constrained import GrammarError, GrammarSpec, create_grammar_backend


@pytest.fixture(scope="module", params=["outlines", "llguidance", "xgrammar"])
def backend(request, vocab):
    if request.param != "outlines":
        pytest.importorskip(request.param)
    return create_grammar_backend(request.param, vocab)


def walk(grammar, vocab, rng, max_steps: int = 40) -> tuple[list[int], bool]:
    """Random allowed tokens; returns (tokens, ended with EOS). Checks the EOS rule each step."""
    matcher = grammar.new_matcher()
    mask = np.zeros(vocab.vocab_size, dtype=bool)
    eos = vocab.eos_token_ids[0]
    taken: list[int] = []
    for _ in range(max_steps):
        for token in matcher.jump_forward_tokens():
            matcher.accept_token(token)  # raises if a jumped token was not allowed
            taken.append(token)
        matcher.fill_allowed_mask(mask)
        assert mask[eos] == matcher.is_accepting()
        refused = np.flatnonzero(~mask[: len(vocab.token_bytes)])
        if refused.size:
            with pytest.raises(GrammarError):
                matcher.accept_token(int(rng.choice(refused)))
        token = int(rng.choice(np.flatnonzero(mask)))
        matcher.accept_token(token)
        if token == eos:
            return taken, True
        taken.append(token)
    return taken, False


@pytest.mark.parametrize("pattern", [r"[a-c]{2,4}-\d", r"(?:yes|no|maybe)!?", r"x*y"])
def test_regex_walks_fullmatch(backend, vocab, pattern: str) -> None:
    grammar = backend.compile(GrammarSpec("regex", pattern))
    rng = np.random.default_rng(3)
    for _ in range(4):
        taken, ended = walk(grammar, vocab, rng)
        if ended:
            text = b"".join(vocab.token_bytes[t] for t in taken).decode()
            assert re.fullmatch(pattern, text), (backend.name, pattern, text)


def test_json_walk_parses_and_validates(backend, vocab) -> None:
    import jsonschema

    schema = {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "ok": {"type": "boolean"}},
        "required": ["id", "ok"],
        "additionalProperties": False,
    }
    grammar = backend.compile(GrammarSpec.from_schema(schema))
    rng = np.random.default_rng(5)
    ended_any = False
    for _ in range(6):
        taken, ended = walk(grammar, vocab, rng, max_steps=60)
        if ended:
            ended_any = True
            jsonschema.validate(json.loads(b"".join(vocab.token_bytes[t] for t in taken)), schema)
    assert ended_any, "no walk finished; raise max_steps"


def test_bad_specs_raise_grammar_error(backend) -> None:
    for spec in (
        GrammarSpec("regex", "(?=a)b"),
        GrammarSpec("json_schema", '{"type": "nonsense"}'),
    ):
        with pytest.raises(GrammarError):
            backend.compile(spec)


def test_ebnf_only_where_supported(backend, vocab) -> None:
    spec = GrammarSpec("ebnf", 'root ::= "ab" | "cd"')
    if backend.name == "outlines":
        with pytest.raises(GrammarError, match="not supported"):
            backend.compile(spec)
        return
    matcher = backend.compile(spec).new_matcher()
    for byte in b"cd":
        matcher.accept_token(vocab.token_bytes.index(bytes([byte])))
    assert matcher.is_accepting() and matcher.is_terminated()
