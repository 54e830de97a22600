"""The scheduler-side request: token ids, KV bookkeeping, sampling and grammar state, finish."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from radixlm.runtime.io_struct import FinishReason, GenerateRequest, LogprobPair


@dataclass(eq=False)
class Req:
    """One generation request as the scheduler sees it.

    ``all_ids = input_ids + output_ids``. The first ``kv_len`` of them have K/V in the pool
    (``req_to_token[req_pool_idx, :kv_len]``); ``all_ids[kv_len:]`` are the tokens the next
    forward pass must feed (the last sampled token, plus jump-forward tokens).
    """

    rid: str
    input_ids: list[int]
    request: GenerateRequest
    sampling_state: Any  # sampler.SamplingRequestState
    arrival: float = field(default_factory=time.monotonic)
    output_ids: list[int] = field(default_factory=list)
    req_pool_idx: int | None = None
    kv_len: int = 0
    # Leading slots owned by the radix cache (matched at admission), and the node locked for them.
    tree_prefix_len: int = 0
    tree_node: Any = None
    cached_tokens: int = 0  # reported to the client: prompt tokens served from the cache
    grammar: Any = None  # constrained.GrammarMatcher
    grammar_future: Any = None
    jump_forward_tokens: int = 0
    finish: FinishReason | None = None
    num_sent_output: int = 0
    retractions: int = 0
    # Logprobs gathered so far (sent incrementally with the output tokens).
    output_logprobs: list[LogprobPair] = field(default_factory=list)
    output_top_logprobs: list[list[LogprobPair]] = field(default_factory=list)
    input_logprobs: list[LogprobPair] = field(default_factory=list)
    input_top_logprobs: list[list[LogprobPair]] = field(default_factory=list)
    input_logprobs_sent: bool = False

    @property
    def params(self):
        return self.request.sampling

    @property
    def all_ids(self) -> list[int]:
        return self.input_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids) + len(self.output_ids)

    def token_range(self, start: int, end: int) -> list[int]:
        """``all_ids[start:end]`` without concatenating the whole sequence (a hot path)."""
        num_input = len(self.input_ids)
        if start >= num_input:
            return self.output_ids[start - num_input : end - num_input]
        return self.all_ids[start:end]

    @property
    def num_pending(self) -> int:
        return len(self.input_ids) + len(self.output_ids) - self.kv_len

    @property
    def in_prefill(self) -> bool:
        """True while prompt tokens are still missing from the KV pool."""
        return self.kv_len < len(self.input_ids)

    @property
    def wants_input_logprobs(self) -> bool:
        return self.request.return_logprob and 0 <= self.request.logprob_start_len < len(
            self.input_ids
        )

    @property
    def max_prefix_len(self) -> int:
        """How much of all_ids may come from the cache: at least one token must be computed to
        get logits, and input logprobs need their positions computed."""
        limit = len(self.input_ids) + len(self.output_ids) - 1
        if self.wants_input_logprobs:
            limit = min(limit, self.request.logprob_start_len)
        return max(limit, 0)

    @property
    def remaining_new_tokens(self) -> int:
        return max(self.params.max_new_tokens - len(self.output_ids), 0)

    def finish_with(self, reason: FinishReason) -> None:
        if self.finish is None:
            self.finish = reason
