"""Which tokens to append when the grammar forces the next bytes (the compressed-FSM jump).

Rule (documented in docs/constrained.md):
1. The forced text F is the longest byte string every continuation shares (backend specific:
   a byte chain through the token FSM for outlines, the engine's own for xgrammar).
2. F is split by longest match over the vocabulary. Tokenizers in the GPT-2 family never merge
   across their pre-tokenizer boundaries, so on the forced punctuation/keys of JSON the longest
   match coincides with BPE; it is also what a model decoding the same text greedily picks.
3. Hold back at the token boundary: let q be the first position in F from which an allowed token
   runs past the end of F (e.g. `":` after a forced key `name"`). Only whole tokens ending at or
   before q are appended; the model itself picks how the rest of F joins the unforced text.
So a forced token never differs from the tokenization of the final text in the way SGLang's
re-encoded jumps did: nothing after the hold-back point is ever decided for the model.
"""

from __future__ import annotations

from collections.abc import Callable

from radixlm.constrained.vocab_index import VocabIndex

# One jump never looks further ahead than this; the next call continues.
MAX_FORCED_BYTES = 4096


def forced_tokens(
    forced: bytes,
    vocab_index: VocabIndex,
    allowed_at: Callable[[int, int], bool] | None = None,
) -> list[int]:
    """Tokens to append for forced bytes ``forced``.

    ``allowed_at(q, token_id)`` says whether the grammar allows ``token_id`` right after
    ``forced[:q]``; without it every vocabulary token counts as allowed (more hold-back, still
    safe). Returns [] when nothing can be appended safely.
    """
    n = len(forced)
    cut = n
    for q in range(n):
        spanning = vocab_index.ids_extending(forced[q:])
        if any(allowed_at is None or allowed_at(q, t) for t in spanning):
            cut = q
            break
    tokens: list[int] = []
    pos = 0
    while pos < cut:
        token_id = vocab_index.longest_token_at(forced, pos)
        end = pos + len(vocab_index.vocab.token_bytes[token_id]) if token_id >= 0 else cut + 1
        if end > cut:
            break
        tokens.append(token_id)
        pos = end
    return tokens
