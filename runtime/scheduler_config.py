"""The slice of ServerArgs and model facts the scheduler needs, plus request admission checks."""

from __future__ import annotations

from dataclasses import dataclass

from radixlm.runtime.request import Req


@dataclass(frozen=True)
class SchedulerConfig:
    context_len: int
    vocab_size: int
    max_running_requests: int
    chunk_size: int  # max tokens of one prefill pass
    schedule_policy: str = "lpm"
    stream_interval: int = 1
    init_new_token_ratio: float = 0.5
    enable_jump_forward: bool = True
    # Launch decode pass N+1 before applying pass N's tokens (runtime/overlap.py). Pays where
    # the forward runs asynchronously (CUDA); on CPU the pass is synchronous anyway.
    enable_overlap: bool = False
    # Running requests decode inside prefill passes (SGLang's --enable-mixed-chunk): they do not
    # stall while a burst of new prompts is prefilled, and their rows ride in the prefill pass's
    # large GEMMs instead of a decode pass of their own.
    enable_mixed_chunk: bool = False

    def validate(self, req: Req) -> str | None:
        """Last line of defence (the HTTP edge checks first): a reason to reject, or None."""
        if not req.input_ids:
            return "input_ids must not be empty"
        bad = next((t for t in req.input_ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            return (
                f"input_ids contains token id {bad} outside the vocabulary [0, {self.vocab_size})"
            )
        total = len(req.input_ids) + req.params.max_new_tokens
        if total > self.context_len:
            return (
                f"the prompt ({len(req.input_ids)} tokens) plus max_new_tokens "
                f"({req.params.max_new_tokens}) exceeds the context length of {self.context_len} tokens"
            )
        return None
