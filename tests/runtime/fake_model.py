"""A fake model runner for scheduler tests: it predicts from what is really in the KV pool.

Each "K/V" slot stores the token id written there, and whether it came in as a prompt token
(``ForwardBatch.prompt_rows_cpu``: on CPU the two kinds take different attention kernels); the
next-token logits of a position are a hash of both, gathered through ``req_to_token`` for
positions 0..p. So any bookkeeping bug (wrong slots, a lost prefix, a stale retraction, a
generated token recomputed as a prompt token) changes the outputs.
"""

from __future__ import annotations

import torch

from radixlm.runtime.forward_batch import ForwardBatch
from radixlm.runtime.memory_pool import KVSlotAllocator, ReqToTokenPool

VOCAB = 64
EOS = 1


class FakeModelRunner:
    device = "cpu"

    def __init__(
        self,
        max_total_tokens: int = 4096,
        max_reqs: int = 64,
        context_len: int = 1024,
        eos_every: int = 0,
        fail_on_token: int | None = None,
    ) -> None:
        self.req_to_token_pool = ReqToTokenPool(max_reqs, context_len, "cpu")
        self.token_allocator = KVSlotAllocator(max_total_tokens)
        self.stored = torch.full((max_total_tokens + 1,), -1, dtype=torch.int64)
        self.as_prompt = torch.zeros(max_total_tokens + 1, dtype=torch.bool)
        self.eos_every = eos_every
        self.fail_on_token = fail_on_token
        self.num_forward = 0
        self.num_tokens = 0  # tokens computed (prefill + decode), for prefix-reuse checks

    def forward(self, batch: ForwardBatch) -> torch.Tensor:
        self.num_forward += 1
        self.num_tokens += batch.num_tokens
        if self.fail_on_token is not None and bool((batch.input_ids == self.fail_on_token).any()):
            raise RuntimeError("injected failure")
        self.stored[batch.out_cache_loc] = batch.input_ids
        prompt_rows = batch.prompt_rows_cpu or (0,) * batch.batch_size
        self.as_prompt[batch.out_cache_loc] = torch.tensor(
            [k < rows for n, rows in zip(batch.extend_lens_cpu, prompt_rows, strict=True)
             for k in range(n)]
        )  # fmt: skip
        # Map each flat token index to (sequence, position).
        owners = []
        for i, (p, n) in enumerate(zip(batch.prefix_lens_cpu, batch.extend_lens_cpu, strict=True)):
            owners.extend((i, p + k) for k in range(n))
        rows = []
        for flat in batch.logits_indices.tolist():
            seq, pos = owners[flat]
            slots = self.req_to_token_pool.req_to_token[batch.req_pool_indices[seq], : pos + 1]
            tokens = self.stored[slots]
            assert bool((tokens >= 0).all()), "read a KV slot that was never written"
            kinds = self.as_prompt[slots].tolist()
            rows.append(next_token_logits(tokens.tolist(), self.eos_every, kinds))
        return torch.stack(rows)


def next_token_logits(
    tokens: list[int], eos_every: int = 0, as_prompt: list[bool] | None = None
) -> torch.Tensor:
    h = 0
    for t, prompt in zip(tokens, as_prompt or [False] * len(tokens), strict=True):
        h = (h * 31 + t + 7 + 500 * prompt) % 1_000_003
    target = 2 + h % (VOCAB - 2)
    if eos_every and len(tokens) % eos_every == 0:
        target = EOS
    logits = torch.linspace(0, 1, VOCAB)  # distinct values: a stable second choice
    logits[target] = 10.0
    return logits


class FakeTokenizer:
    """Token t decodes to "<t>", so stop strings can be tested on text."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(f"<{t}>" for t in ids if not (skip_special_tokens and t == EOS))
