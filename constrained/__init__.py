"""Constrained decoding: regex / JSON schema / choices -> token masks and jump-forward.

No torch here: the scheduler applies the numpy masks to its logits.
"""

from radixlm.constrained.backend import (
    GRAMMAR_BACKENDS,
    CompiledGrammar,
    GrammarBackend,
    GrammarMatcher,
    create_grammar_backend,
)
from radixlm.constrained.compiler import GrammarCompiler
from radixlm.constrained.spec import GrammarError, GrammarSpec, TokenizerVocab
from radixlm.constrained.validate import validate_spec

__all__ = [
    "GRAMMAR_BACKENDS",
    "CompiledGrammar",
    "GrammarBackend",
    "GrammarCompiler",
    "GrammarError",
    "GrammarMatcher",
    "GrammarSpec",
    "TokenizerVocab",
    "create_grammar_backend",
    "validate_spec",
]
