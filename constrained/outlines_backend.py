"""The `outlines` backend: our regex / JSON-schema lowering + outlines-core's token index.

Per-state facts (packed mask, forced byte, jump tokens, termination) are computed lazily and
cached on the compiled grammar, which every request with the same spec shares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from outlines_core import Guide, Index, Vocabulary

from radixlm.constrained.backend import CompiledGrammar, GrammarBackend, GrammarMatcher
from radixlm.constrained.jump_forward import MAX_FORCED_BYTES, forced_tokens
from radixlm.constrained.spec import GrammarError, GrammarSpec, TokenizerVocab
from radixlm.constrained.spec_regex import spec_to_regex
from radixlm.constrained.vocab_index import VocabIndex

# Packed masks kept per grammar (vocab/8 bytes each): beyond this, masks are recomputed.
MAX_MASK_CACHE_BYTES = 64 << 20


@dataclass(frozen=True)
class OutlinesArtifact:
    kind: str
    regex: str
    index: Index


class OutlinesBackend(GrammarBackend):
    name = "outlines"

    def __init__(self, vocab: TokenizerVocab, *, compact_json: bool = False) -> None:
        super().__init__(vocab, compact_json=compact_json)
        self.vocab_index = VocabIndex(vocab)
        # outlines-core wants one EOS outside the map; all EOS ids are handled by the matcher.
        self.outlines_vocab = Vocabulary(vocab.eos_token_ids[0], self.vocab_index.text_token_map())

    def build(self, spec: GrammarSpec) -> OutlinesArtifact:
        regex = spec_to_regex(spec, compact_json=self.compact_json)
        try:
            index = Index(regex, self.outlines_vocab)
        except (ValueError, OverflowError) as exc:
            raise GrammarError(f"{spec.kind}: cannot compile: {str(exc).splitlines()[0]}") from exc
        return OutlinesArtifact(spec.kind, regex, index)

    def load(self, artifact: object) -> OutlinesGrammar:
        assert isinstance(artifact, OutlinesArtifact)
        return OutlinesGrammar(artifact.index, self.vocab_index)


class OutlinesGrammar(CompiledGrammar):
    def __init__(self, index: Index, vocab_index: VocabIndex) -> None:
        self.index = index
        self.vocab_index = vocab_index
        self.num_text_tokens = len(vocab_index.vocab.token_bytes)
        self.byte_ids = vocab_index.byte_token_ids
        self.first_bytes_are_tokens = not vocab_index.orphan_first_bytes
        self.eos_set = frozenset(vocab_index.vocab.eos_token_ids)
        self._masks: dict[int, np.ndarray] = {}
        self._mask_bytes = 0
        self._forced: dict[int, int] = {}
        self._jumps: dict[int, list[int]] = {}
        self._continues: dict[int, bool] = {}

    def new_matcher(self) -> OutlinesMatcher:
        return OutlinesMatcher(self)

    def packed_mask(self, state: int, guide: Guide) -> np.ndarray:
        """Allowed ids at ``state`` as little-endian bits; ``guide`` must be at ``state``."""
        packed = self._masks.get(state)
        if packed is None:
            words = np.zeros((self.num_text_tokens + 31) // 32, dtype=np.int32)
            guide.write_mask_into(words.ctypes.data, words.size, 4)
            packed = words.view(np.uint8)
            if self._mask_bytes + packed.nbytes <= MAX_MASK_CACHE_BYTES:
                self._masks[state] = packed
                self._mask_bytes += packed.nbytes
        return packed

    def allowed_first_bytes(self, state: int) -> list[int]:
        if self.first_bytes_are_tokens:
            # A longer token is allowed only if its first byte, itself a token, is allowed.
            nxt = self.index.get_next_state
            return [
                b
                for b in range(256)
                if self.byte_ids[b] >= 0 and nxt(state, self.byte_ids[b]) is not None
            ]
        token_bytes = self.vocab_index.vocab.token_bytes
        allowed = self.index.get_allowed_tokens(state) or []
        return sorted(
            {
                token_bytes[t][0]
                for t in allowed
                if t < self.num_text_tokens and t not in self.eos_set and token_bytes[t]
            }
        )

    def forced_byte(self, state: int) -> int:
        """The byte every continuation from ``state`` starts with, or -1."""
        forced = self._forced.get(state)
        if forced is None:
            forced = -1
            if not self.index.is_final_state(state):
                first = self.allowed_first_bytes(state)
                if len(first) == 1 and self.byte_ids[first[0]] >= 0:
                    forced = first[0]
            self._forced[state] = forced
        return forced

    def jump_tokens(self, state: int) -> list[int]:
        tokens = self._jumps.get(state)
        if tokens is None:
            forced = bytearray()
            states = [state]
            while len(forced) < MAX_FORCED_BYTES:
                byte = self.forced_byte(states[-1])
                if byte < 0:
                    break
                forced.append(byte)
                states.append(self.index.get_next_state(states[-1], self.byte_ids[byte]))
            nxt = self.index.get_next_state
            tokens = forced_tokens(
                bytes(forced), self.vocab_index, lambda q, t: nxt(states[q], t) is not None
            )
            self._jumps[state] = tokens
        return tokens

    def has_continuation(self, state: int) -> bool:
        cont = self._continues.get(state)
        if cont is None:
            cont = bool(self.allowed_first_bytes(state))
            self._continues[state] = cont
        return cont


class OutlinesMatcher(GrammarMatcher):
    def __init__(self, grammar: OutlinesGrammar) -> None:
        self.grammar = grammar
        self.guide = Guide(grammar.index)
        self.eos_ids = grammar.vocab_index.eos_ids
        self.eos_set = grammar.eos_set
        self.eos_accepted = False

    def fill_allowed_mask(self, out: np.ndarray) -> None:
        n = self.grammar.num_text_tokens
        if self.eos_accepted:
            out[:] = False
            return
        packed = self.grammar.packed_mask(self.guide.get_state(), self.guide)
        out[:n] = np.unpackbits(packed, count=n, bitorder="little").view(bool)
        out[n:] = False
        out[self.eos_ids] = self.is_accepting()

    def accept_token(self, token_id: int) -> None:
        if self.eos_accepted:
            raise GrammarError(f"token {token_id} after EOS")
        if token_id in self.eos_set:
            if not self.is_accepting():
                raise GrammarError("EOS before the output matches the grammar")
            self.eos_accepted = True
            return
        if not 0 <= token_id < self.grammar.num_text_tokens:
            raise GrammarError(f"token {token_id} is outside the text vocabulary")
        if self.grammar.index.get_next_state(self.guide.get_state(), token_id) is None:
            raise GrammarError(f"token {token_id} is not allowed by the grammar here")
        self.guide.advance(token_id, return_tokens=False)

    def is_accepting(self) -> bool:
        return self.eos_accepted or self.grammar.index.is_final_state(self.guide.get_state())

    def is_terminated(self) -> bool:
        if self.eos_accepted:
            return True
        state = self.guide.get_state()
        return self.grammar.index.is_final_state(state) and not self.grammar.has_continuation(state)

    def jump_forward_tokens(self) -> list[int]:
        if self.eos_accepted:
            return []
        return list(self.grammar.jump_tokens(self.guide.get_state()))
