"""Cheap, vocabulary-free validation run in the HTTP process before a request is queued."""

from __future__ import annotations

from radixlm.constrained.spec import GrammarError, GrammarSpec
from radixlm.constrained.spec_regex import MAX_SPEC_CHARS, spec_to_regex


def validate_spec(spec: GrammarSpec) -> None:
    """Raise GrammarError for bad regex syntax, lookarounds, invalid JSON, unsupported or
    unsatisfiable schemas. Compile-time failures (automaton too large, timeouts) come later,
    from GrammarCompiler, and are reported for that request the same way."""
    if spec.kind == "ebnf":
        # Only the xgrammar backend parses EBNF; it is checked when compiled.
        if not spec.value.strip():
            raise GrammarError("ebnf: empty grammar")
        if len(spec.value) > MAX_SPEC_CHARS:
            raise GrammarError(f"ebnf: grammar longer than {MAX_SPEC_CHARS} characters")
        return
    spec_to_regex(spec)
