"""The `llguidance` backend (pip `llguidance`): Earley parser + lazy lexer, no precomputed index.

Its tokenizer is built from our byte table; where llguidance needs to tokenize (fast-forward
tokens), it gets our longest-match tokenizer, so its jump-forward uses the same canonical choice
as ours, with llguidance's own boundary healing.
"""

from __future__ import annotations

import json

import numpy as np

from radixlm.constrained import charset
from radixlm.constrained.backend import CompiledGrammar, GrammarBackend, GrammarMatcher
from radixlm.constrained.regex_translate import translate
from radixlm.constrained.schema_to_regex import COMPACT_WHITESPACE, DEFAULT_WHITESPACE, parse_schema
from radixlm.constrained.spec import GrammarError, GrammarSpec, TokenizerVocab
from radixlm.constrained.spec_regex import choices_list, literal_regex
from radixlm.constrained.vocab_index import VocabIndex


class _TokenizerView:
    """What llguidance.TokenizerWrapper reads: bytes per id, EOS/BOS, specials, a tokenizer."""

    def __init__(self, vocab: TokenizerVocab, vocab_index: VocabIndex) -> None:
        self.eos_token_id = vocab.eos_token_ids[0]
        self.bos_token_id = None
        # Specials and padding ids get distinct unreachable names (0xFF starts no UTF-8 text).
        self.tokens = [
            (data if data else b"\xff<special_%d>" % i)
            for i, data in enumerate(
                vocab.token_bytes + (None,) * (vocab.vocab_size - len(vocab.token_bytes))
            )
        ]
        self.special_token_ids = [
            i for i, data in enumerate(self.tokens) if data.startswith(b"\xff<")
        ]
        self._index = vocab_index

    def __call__(self, text: bytes) -> list[int]:
        return self._index.greedy_tokenize(text)


def grammar_text(spec: GrammarSpec, compact_json: bool) -> str:
    """llguidance's grammar for ``spec`` (no vocabulary needed)."""
    from llguidance import LLMatcher
    from llguidance.gbnf_to_lark import any_to_lark

    if spec.kind == "json_schema":
        schema = parse_schema(spec.value)
        if compact_json:
            options = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
        else:
            options = {"whitespace_pattern": DEFAULT_WHITESPACE}
        assert COMPACT_WHITESPACE == ""
        return LLMatcher.grammar_from_json_schema(json.dumps(schema), overrides=options)
    if spec.kind == "regex":
        if not spec.value:
            raise GrammarError("regex: empty regex")
        regex = translate(spec.value, universe=charset.ALL_CHARS, search=False, where="regex")
        return LLMatcher.grammar_from_regex(regex)
    if spec.kind == "choices":
        regex = "(?:" + "|".join(literal_regex(c) for c in choices_list(spec.value)) + ")"
        return LLMatcher.grammar_from_regex(regex)
    try:
        return LLMatcher.grammar_from_lark(any_to_lark(spec.value))
    except Exception as exc:  # noqa: BLE001 - the converter raises plain Exceptions
        raise GrammarError(f"ebnf: {exc}") from exc


def checked_grammar(spec: GrammarSpec, compact_json: bool, tokenizer: object | None = None) -> str:
    """``grammar_text``, refused with llguidance's own message when it cannot enforce it (an
    unsupported keyword, an invalid pattern...). Without a tokenizer the check needs no
    vocabulary: the HTTP process runs it before queueing a request."""
    from llguidance import LLMatcher

    grammar = grammar_text(spec, compact_json)
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
    if is_error:
        raise GrammarError(f"{spec.kind}: {messages[0]}")
    return grammar


class LLGuidanceBackend(GrammarBackend):
    name = "llguidance"

    def __init__(self, vocab: TokenizerVocab, *, compact_json: bool = False) -> None:
        import llguidance

        super().__init__(vocab, compact_json=compact_json)
        self.vocab_index = VocabIndex(vocab)
        # With the real tokenizer llguidance keeps the model's own (BPE) tokenization of forced
        # text allowed; with longest-match it would mask e.g. `In|sn` in favour of `Ins|n`.
        source = vocab.tokenizer_json or llguidance.TokenizerWrapper(
            _TokenizerView(vocab, self.vocab_index)
        )
        self.tokenizer = llguidance.LLTokenizer(
            source, n_vocab=vocab.vocab_size, eos_token=list(vocab.eos_token_ids)
        )

    def build(self, spec: GrammarSpec) -> str:
        return checked_grammar(spec, self.compact_json, self.tokenizer)

    def load(self, artifact: object) -> LLGuidanceGrammar:
        assert isinstance(artifact, str)
        return LLGuidanceGrammar(artifact, self)


class LLGuidanceGrammar(CompiledGrammar):
    def __init__(self, grammar: str, backend: LLGuidanceBackend) -> None:
        self.grammar = grammar
        self.backend = backend

    def new_matcher(self) -> LLGuidanceMatcher:
        from llguidance import LLMatcher

        matcher = LLMatcher(self.backend.tokenizer, self.grammar, log_level=0)
        if matcher.is_error():
            raise GrammarError(matcher.get_error())
        return LLGuidanceMatcher(matcher, self.backend)


class LLGuidanceMatcher(GrammarMatcher):
    def __init__(self, matcher: object, backend: LLGuidanceBackend) -> None:
        self.matcher = matcher
        self.vocab_size = backend.vocab.vocab_size
        self.eos_ids = backend.vocab_index.eos_ids
        self.eos_set = frozenset(backend.vocab.eos_token_ids)
        self.words = np.zeros((self.vocab_size + 31) // 32, dtype=np.int32)
        self.eos_accepted = False

    def fill_allowed_mask(self, out: np.ndarray) -> None:
        if self.eos_accepted:
            out[:] = False
            return
        self.matcher.unsafe_compute_mask_ptr(self.words.ctypes.data, self.words.nbytes)
        out[:] = np.unpackbits(self.words.view(np.uint8), count=self.vocab_size, bitorder="little")
        out[self.eos_ids] = self.is_accepting()

    def accept_token(self, token_id: int) -> None:
        if self.eos_accepted:
            raise GrammarError(f"token {token_id} after EOS")
        if token_id in self.eos_set:
            if not self.is_accepting():
                raise GrammarError("EOS before the output matches the grammar")
            self.eos_accepted = True
            return
        # validate_tokens leaves the matcher as it was; consume_token would poison it on error.
        if self.matcher.validate_tokens([token_id]) != 1:
            raise GrammarError(f"token {token_id} is not allowed by the grammar here")
        if not self.matcher.consume_token(token_id):
            raise GrammarError(self.matcher.get_error())

    def is_accepting(self) -> bool:
        return self.eos_accepted or self.matcher.is_accepting()

    def is_terminated(self) -> bool:
        return self.eos_accepted or self.matcher.is_stopped()

    def jump_forward_tokens(self) -> list[int]:
        if self.eos_accepted:
            return []
        return [t for t in self.matcher.compute_ff_tokens() if t not in self.eos_set]
