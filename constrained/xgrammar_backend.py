"""The `xgrammar` backend (pip `xgrammar`, installed without its torch pin): pushdown automaton
with an adaptive token-mask cache; the only backend that accepts `ebnf` specs.

Caveat measured in docs/constrained.md: xgrammar ignores several JSON-schema keywords instead of
refusing them, so it can accept instances the schema rejects. Its forced text comes from
`find_jump_forward_string`; the token boundary uses the vocabulary-only hold-back rule.
"""

from __future__ import annotations

import json

import numpy as np

from radixlm.constrained import charset
from radixlm.constrained.backend import CompiledGrammar, GrammarBackend, GrammarMatcher
from radixlm.constrained.jump_forward import forced_tokens
from radixlm.constrained.regex_translate import translate
from radixlm.constrained.schema_to_regex import parse_schema
from radixlm.constrained.spec import GrammarError, GrammarSpec, TokenizerVocab
from radixlm.constrained.spec_regex import choices_list
from radixlm.constrained.vocab_index import VocabIndex


class XGrammarBackend(GrammarBackend):
    name = "xgrammar"

    def __init__(self, vocab: TokenizerVocab, *, compact_json: bool = False) -> None:
        import xgrammar

        super().__init__(vocab, compact_json=compact_json)
        self.vocab_index = VocabIndex(vocab)
        # Empty strings mark special tokens for xgrammar: never allowed inside a grammar.
        encoded = [data or b"" for data in vocab.token_bytes]
        self.tokenizer_info = xgrammar.TokenizerInfo(
            encoded,
            xgrammar.VocabType.RAW,
            vocab_size=vocab.vocab_size,
            stop_token_ids=list(vocab.eos_token_ids),
        )
        self.compiler = xgrammar.GrammarCompiler(
            self.tokenizer_info, max_threads=1, cache_enabled=False
        )

    def build(self, spec: GrammarSpec) -> str:
        try:
            if spec.kind == "json_schema":
                schema = json.dumps(parse_schema(spec.value))
                if self.compact_json:
                    compiled = self.compiler.compile_json_schema(
                        schema, any_whitespace=False, separators=(",", ":")
                    )
                else:
                    compiled = self.compiler.compile_json_schema(
                        schema, any_whitespace=True, max_whitespace_cnt=1
                    )
            elif spec.kind == "regex":
                # Our translator refuses lookarounds/backreferences; xgrammar parses the original
                # (it does not read the `\x{..}` escapes we emit).
                translate(spec.value, universe=charset.ALL_CHARS, search=False, where="regex")
                compiled = self.compiler.compile_regex(spec.value)
            elif spec.kind == "choices":
                choices = choices_list(spec.value)
                ebnf = "root ::= " + " | ".join(json.dumps(c) for c in choices)
                compiled = self.compiler.compile_grammar(ebnf)
            else:
                compiled = self.compiler.compile_grammar(spec.value)
        except (RuntimeError, ValueError, TypeError) as exc:
            if isinstance(exc, GrammarError):
                raise
            raise GrammarError(f"{spec.kind}: {str(exc).strip().splitlines()[-1][:300]}") from exc
        return compiled.serialize_json()

    def load(self, artifact: object) -> XGrammarGrammar:
        import xgrammar

        assert isinstance(artifact, str)
        return XGrammarGrammar(
            xgrammar.CompiledGrammar.deserialize_json(artifact, self.tokenizer_info), self
        )


class XGrammarGrammar(CompiledGrammar):
    def __init__(self, compiled: object, backend: XGrammarBackend) -> None:
        self.compiled = compiled
        self.backend = backend

    def new_matcher(self) -> XGrammarMatcher:
        import xgrammar

        return XGrammarMatcher(xgrammar.GrammarMatcher(self.compiled), self.backend)


class XGrammarMatcher(GrammarMatcher):
    def __init__(self, matcher: object, backend: XGrammarBackend) -> None:
        self.matcher = matcher
        self.vocab_index = backend.vocab_index
        self.vocab_size = backend.vocab.vocab_size
        self.eos_ids = backend.vocab_index.eos_ids
        self.eos_set = frozenset(backend.vocab.eos_token_ids)
        self.words = np.zeros((1, (self.vocab_size + 31) // 32), dtype=np.int32)
        self.eos_accepted = False

    def fill_allowed_mask(self, out: np.ndarray) -> None:
        if self.eos_accepted:
            out[:] = False
            return
        self.matcher.fill_next_token_bitmask(self.words)
        bits = np.unpackbits(self.words[0].view(np.uint8), count=self.vocab_size, bitorder="little")
        out[:] = bits
        out[self.eos_ids] = self.is_accepting()

    def accept_token(self, token_id: int) -> None:
        if self.eos_accepted:
            raise GrammarError(f"token {token_id} after EOS")
        if token_id in self.eos_set:
            if not self.is_accepting():
                raise GrammarError("EOS before the output matches the grammar")
            self.eos_accepted = True
            return
        if not 0 <= token_id < len(self.vocab_index.vocab.token_bytes):
            raise GrammarError(f"token {token_id} is outside the text vocabulary")
        if not self.matcher.accept_token(token_id):
            raise GrammarError(f"token {token_id} is not allowed by the grammar here")

    def is_accepting(self) -> bool:
        return self.eos_accepted or self.matcher.is_completed()

    def is_terminated(self) -> bool:
        if self.eos_accepted:
            return True
        if not self.matcher.is_completed():
            return False
        mask = np.zeros(self.vocab_size, dtype=bool)
        self.fill_allowed_mask(mask)
        mask[self.eos_ids] = False
        return not mask.any()

    def jump_forward_tokens(self) -> list[int]:
        if self.eos_accepted:
            return []
        forced = self.matcher.find_jump_forward_string().encode("utf-8")
        return forced_tokens(forced, self.vocab_index)
