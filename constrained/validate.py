"""Cheap, vocabulary-free validation run in the HTTP process before a request is queued."""

from __future__ import annotations

from radixlm.constrained.spec import GrammarError, GrammarSpec
from radixlm.constrained.spec_regex import MAX_SPEC_CHARS, spec_to_regex


def validate_spec(spec: GrammarSpec, backend: str = "outlines", compact_json: bool = False) -> None:
    """Raise GrammarError for bad regex syntax, lookarounds, invalid JSON, unsupported or
    unsatisfiable schemas. Compile-time failures (automaton too large, timeouts) come later,
    from GrammarCompiler, and are reported for that request the same way.

    llguidance refuses what it cannot enforce by itself, so its own vocabulary-free check
    decides for it. For the others our lowering to one regex is the gate: outlines compiles
    that regex, and xgrammar would silently ignore keywords it does not enforce."""
    if len(spec.value) > MAX_SPEC_CHARS:
        raise GrammarError(f"{spec.kind}: spec longer than {MAX_SPEC_CHARS} characters")
    if backend == "llguidance":
        from radixlm.constrained.llguidance_backend import checked_grammar

        checked_grammar(spec, compact_json)
        return
    if spec.kind == "ebnf" and backend == "xgrammar":
        # xgrammar parses EBNF only when it compiles it.
        if not spec.value.strip():
            raise GrammarError("ebnf: empty grammar")
        return
    spec_to_regex(spec, compact_json=compact_json)  # refuses EBNF for outlines
