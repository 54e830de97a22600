"""GrammarCompiler: off-loop compiles, cache hits, time limits that do not block other specs."""

from __future__ import annotations

import time

import pytest

from radixlm.constrained import GrammarCompiler, GrammarError, GrammarSpec

# A DFA with ~2^30 states: outlines-core would build it for hours.
PATHOLOGICAL = GrammarSpec("regex", "[ab]*a[ab]{30}")


def deep_any_of(depth: int) -> dict:
    """A 40-deep anyOf whose branches share prefixes (each level doubles the automaton)."""
    defs = {"d0": {"type": "string"}}
    for i in range(1, depth + 1):
        ref = {"$ref": f"#/$defs/d{i - 1}"}
        defs[f"d{i}"] = {
            "anyOf": [
                {"type": "array", "items": ref},
                {"type": "array", "items": ref, "minItems": 2},
            ]
        }
    return {"$ref": f"#/$defs/d{depth}", "$defs": defs}


@pytest.fixture(scope="module")
def compiler(outlines_backend):
    compiler = GrammarCompiler(outlines_backend, timeout_s=3.0, cache_size=4)
    yield compiler
    start = time.monotonic()
    compiler.shutdown()
    assert time.monotonic() - start < 10, "shutdown hung"


def test_compiles_and_caches(compiler, vocab) -> None:
    spec = GrammarSpec("regex", "[0-9]{3}")
    grammar = compiler.submit(spec).result(timeout=60)
    matcher = grammar.new_matcher()
    for digit in b"123":
        matcher.accept_token(vocab.token_bytes.index(bytes([digit])))
    assert matcher.is_terminated()
    hits = compiler.num_cache_hits
    assert compiler.submit(spec).result(timeout=1) is grammar
    assert compiler.num_cache_hits == hits + 1


def test_timeout_fails_only_that_spec(compiler) -> None:
    start = time.monotonic()
    slow = compiler.submit(PATHOLOGICAL)
    after = compiler.submit(GrammarSpec("regex", "ok|fine"))
    with pytest.raises(GrammarError, match="timed out after 3s"):
        slow.result(timeout=30)
    assert after.result(timeout=30) is not None
    assert time.monotonic() - start < 25
    # The failure is cached: repeating the spec costs nothing.
    with pytest.raises(GrammarError, match="timed out"):
        compiler.submit(PATHOLOGICAL).result(timeout=0.5)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (GrammarSpec("regex", "("), "invalid regex"),
        (GrammarSpec("regex", "(?=a)b"), "lookaround"),
        (GrammarSpec("json_schema", '{"type": "nonsense"}'), "unsupported type"),
        (GrammarSpec.from_schema(deep_any_of(40)), "json_schema"),
    ],
    ids=["paren", "lookaround", "nonsense", "deep-anyOf"],
)
def test_bad_specs_fail_within_the_limit(compiler, spec, message) -> None:
    start = time.monotonic()
    with pytest.raises(GrammarError, match=message):
        compiler.submit(spec).result(timeout=30)
    assert time.monotonic() - start < 3.0 + 10  # the limit, plus a worker restart


def test_shutdown_fails_pending_and_refuses_new(outlines_backend) -> None:
    compiler = GrammarCompiler(outlines_backend, timeout_s=60)
    pending = compiler.submit(PATHOLOGICAL)
    time.sleep(0.2)
    start = time.monotonic()
    compiler.shutdown()
    assert time.monotonic() - start < 10
    with pytest.raises(GrammarError, match="shut down"):
        pending.result(timeout=1)
    with pytest.raises(RuntimeError):
        compiler.submit(GrammarSpec("regex", "a"))
