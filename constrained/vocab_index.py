"""Lookup tables over a TokenizerVocab, shared by every backend and by jump-forward."""

from __future__ import annotations

import bisect

import numpy as np

from radixlm.constrained.spec import TokenizerVocab


class VocabIndex:
    """Byte-level views of the vocabulary: which ids are ordinary text tokens, the id of each
    byte string (lowest id when several tokens share bytes) and prefix search over token bytes."""

    def __init__(self, vocab: TokenizerVocab) -> None:
        self.vocab = vocab
        eos = set(vocab.eos_token_ids)
        self.eos_ids = np.array(sorted(eos), dtype=np.int64)
        self.id_by_bytes: dict[bytes, int] = {}
        for token_id, data in enumerate(vocab.token_bytes):
            if data and token_id not in eos and data not in self.id_by_bytes:
                self.id_by_bytes[data] = token_id
        # (bytes, id) sorted by bytes: the tokens extending a prefix form one contiguous run.
        self.sorted_bytes = sorted(self.id_by_bytes)
        self.max_token_len = max((len(b) for b in self.sorted_bytes), default=0)
        self.byte_token_ids = [self.id_by_bytes.get(bytes([b]), -1) for b in range(256)]
        # Bytes that start some token without being a token themselves. When there are none,
        # "which first bytes are allowed" is answered by the 256 single-byte tokens alone.
        self.orphan_first_bytes = {data[0] for data in self.sorted_bytes} - {
            b for b in range(256) if self.byte_token_ids[b] >= 0
        }

    def text_token_map(self) -> dict[bytes, list[int]]:
        """bytes -> every id with those bytes (EOS and special tokens left out)."""
        eos = set(self.vocab.eos_token_ids)
        out: dict[bytes, list[int]] = {}
        for token_id, data in enumerate(self.vocab.token_bytes):
            if data and token_id not in eos:
                out.setdefault(data, []).append(token_id)
        return out

    def longest_token_at(self, data: bytes, start: int) -> int:
        """Id of the longest token equal to a prefix of data[start:]; -1 if none."""
        for end in range(min(len(data), start + self.max_token_len), start, -1):
            token_id = self.id_by_bytes.get(data[start:end], -1)
            if token_id >= 0:
                return token_id
        return -1

    def greedy_tokenize(self, data: bytes) -> list[int]:
        """Longest-match tokenization (our canonical choice for forced text; see docs)."""
        out: list[int] = []
        pos = 0
        while pos < len(data):
            token_id = self.longest_token_at(data, pos)
            if token_id < 0:
                break
            out.append(token_id)
            pos += len(self.vocab.token_bytes[token_id])
        return out

    def ids_extending(self, prefix: bytes) -> list[int]:
        """Ids of tokens whose bytes start with ``prefix`` and are strictly longer."""
        lo = bisect.bisect_right(self.sorted_bytes, prefix)
        hi = bisect.bisect_left(self.sorted_bytes, prefix + b"\xff" * (self.max_token_len + 1))
        return [self.id_by_bytes[b] for b in self.sorted_bytes[lo:hi] if b.startswith(prefix)]
