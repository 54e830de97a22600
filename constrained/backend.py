"""The grammar-backend interface the scheduler uses, and the registry of backends.

A backend splits compilation in two so that GrammarCompiler can run the heavy half in a worker
process (where a runaway compile can be killed): ``build`` (spec -> picklable artifact) and
``load`` (artifact -> CompiledGrammar, cheap, in the scheduler process).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from radixlm.constrained.spec import GrammarSpec, TokenizerVocab

# name -> "module:Class", imported on first use (llguidance and xgrammar are optional).
GRAMMAR_BACKENDS: dict[str, str] = {
    "outlines": "radixlm.constrained.outlines_backend:OutlinesBackend",
    "llguidance": "radixlm.constrained.llguidance_backend:LLGuidanceBackend",
    "xgrammar": "radixlm.constrained.xgrammar_backend:XGrammarBackend",
}


class GrammarMatcher(ABC):
    """One request's position in a compiled grammar."""

    @abstractmethod
    def fill_allowed_mask(self, out: np.ndarray) -> None:
        """Overwrite ``out`` ((vocab_size,) bool) with True at allowed ids. EOS ids are allowed
        only where the text so far is a complete match."""

    @abstractmethod
    def accept_token(self, token_id: int) -> None:
        """Advance by one token; GrammarError if the token is not allowed."""

    @abstractmethod
    def is_accepting(self) -> bool:
        """The text so far is a complete match (EOS may follow)."""

    @abstractmethod
    def is_terminated(self) -> bool:
        """Accepting and nothing but EOS can follow (or EOS was accepted)."""

    @abstractmethod
    def jump_forward_tokens(self) -> list[int]:
        """Tokens the grammar forces next, safe at the token boundary (see jump_forward.py);
        does not advance the matcher. [] when nothing is forced."""


class CompiledGrammar(ABC):
    @abstractmethod
    def new_matcher(self) -> GrammarMatcher: ...


class GrammarBackend(ABC):
    name: ClassVar[str]

    def __init__(self, vocab: TokenizerVocab, *, compact_json: bool = False) -> None:
        self.vocab = vocab
        self.compact_json = compact_json

    def compile(self, spec: GrammarSpec) -> CompiledGrammar:
        """Raises GrammarError when the spec cannot be enforced exactly."""
        return self.load(self.build(spec))

    @abstractmethod
    def build(self, spec: GrammarSpec) -> object:
        """The heavy half of compile: a picklable artifact. Raises GrammarError."""

    @abstractmethod
    def load(self, artifact: object) -> CompiledGrammar:
        """The cheap half of compile, in the process that decodes."""


def backend_class(name: str) -> type[GrammarBackend]:
    if name not in GRAMMAR_BACKENDS:
        raise ValueError(f"unknown grammar backend {name!r}; valid: {sorted(GRAMMAR_BACKENDS)}")
    module_name, class_name = GRAMMAR_BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def create_grammar_backend(
    name: str, vocab: TokenizerVocab, *, compact_json: bool = False
) -> GrammarBackend:
    """Build a backend (its vocabulary index is built here, once: a start-up cost)."""
    return backend_class(name)(vocab, compact_json=compact_json)
