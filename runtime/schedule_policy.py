"""Which waiting requests to prefill next, and how many fit (pure policy, no torch).

LPM (longest prefix match first) serves requests that reuse the most cached KV first, so
requests sharing a prefix run back to back while it is still cached (SGLang paper, Alg. 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from radixlm.runtime.request import Req


def order_waiting(waiting: list[Req], policy: str, prefix_len: Callable[[Req], int]) -> list[Req]:
    if policy == "fcfs":
        return sorted(waiting, key=lambda r: r.arrival)
    if policy == "lpm":
        # Matching is O(total tokens); past a long queue the gain is not worth it (SGLang: 128).
        if len(waiting) > 128:
            return sorted(waiting, key=lambda r: r.arrival)
        lengths = {id(r): prefix_len(r) for r in waiting}
        return sorted(waiting, key=lambda r: (-lengths[id(r)], r.arrival))
    raise ValueError(f"unknown schedule policy {policy!r}")


@dataclass
class PrefillBudget:
    """Token budgets for one prefill pass.

    ``available_tokens`` counts KV slots obtainable now; admission keeps back a reservation for
    the future decode tokens of running requests (``new_token_ratio`` of what they may still
    generate), so a burst of admissions does not force immediate retraction.
    """

    available_tokens: int
    reserved_tokens: int
    max_pass_tokens: int  # chunked-prefill size
    max_new_requests: int
    new_token_ratio: float
    chosen: list[tuple[Req, int]] = field(default_factory=list)  # (request, tokens this pass)
    pass_tokens: int = 0

    def try_add(self, req: Req, prefix_len: int) -> int:
        """Adds the request, or a chunk of it; returns the tokens taken (0: budget exhausted)."""
        if len(self.chosen) >= self.max_new_requests:
            return 0
        pending = req.num_tokens - prefix_len
        room_in_pass = self.max_pass_tokens - self.pass_tokens
        if room_in_pass <= 0:
            return 0
        future = int(req.remaining_new_tokens * self.new_token_ratio)
        free_for_us = self.available_tokens - self.reserved_tokens
        if pending <= room_in_pass:
            if pending + future > free_for_us:
                return 0
            take = pending
        else:
            # Chunk: only the last admitted request may be split, and it must fit its chunk.
            take = room_in_pass
            if take > free_for_us:
                return 0
        self.chosen.append((req, take))
        self.pass_tokens += take
        self.available_tokens -= take
        self.reserved_tokens += future
        return take
