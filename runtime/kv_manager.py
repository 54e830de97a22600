"""KV slot bookkeeping shared by requests and the radix cache.

Every KV slot is in exactly one place: the allocator's free list, the radix cache, or a
request's private tail (slots past its tree prefix). ``check`` verifies that, and the scheduler
runs it when idle and on demand.
"""

from __future__ import annotations

from collections.abc import Iterable

from radixlm.radix_cache import RadixCache
from radixlm.runtime.memory_pool import KVSlotAllocator, ReqToTokenPool
from radixlm.runtime.request import Req


class KVManager:
    def __init__(
        self,
        allocator: KVSlotAllocator,
        req_to_token_pool: ReqToTokenPool,
        cache: RadixCache,
        cache_enabled: bool = True,
    ) -> None:
        self.allocator = allocator
        self.req_to_token_pool = req_to_token_pool
        self.cache = cache
        self.cache_enabled = cache_enabled

    @property
    def pool_size(self) -> int:
        return self.allocator.size

    def available(self) -> int:
        """Slots obtainable now: free ones plus what eviction could release."""
        return self.allocator.available_size() + self.cache.evictable_size()

    def prefix_len(self, req: Req) -> int:
        """Length of the cached prefix the request would reuse (for scheduling order)."""
        ids = req.all_ids[: req.max_prefix_len]
        return len(self.cache.match_prefix(ids).slots) if ids else 0

    def admit(self, req: Req) -> bool:
        """Gives the request a req_to_token row and its cached prefix; False if no row is free."""
        row = self.req_to_token_pool.alloc()
        if row is None:
            return False
        ids = req.all_ids[: req.max_prefix_len]
        match = self.cache.match_prefix(ids) if ids else self.cache.match_prefix([])
        self.cache.lock(match.last_node)
        req.req_pool_idx = row
        req.tree_node = match.last_node
        req.tree_prefix_len = len(match.slots)
        req.kv_len = len(match.slots)
        req.cached_tokens = min(len(match.slots), len(req.input_ids))
        self.req_to_token_pool.write(row, 0, match.slots)
        return True

    def alloc(self, num_slots: int) -> list[int] | None:
        """Allocates slots, evicting least-recently-used cache leaves if needed."""
        short = num_slots - self.allocator.available_size()
        if short > 0:
            self.allocator.free(self.cache.evict(short))
        return self.allocator.alloc(num_slots)

    def extend(self, reqs: list[Req], slots: list[list[int]]) -> None:
        """Records each request's slots for its next tokens (their K/V is written by the pass)."""
        self.req_to_token_pool.write_many(
            [r.req_pool_idx for r in reqs], [r.kv_len for r in reqs], slots
        )

    def release(self, req: Req, keep_in_cache: bool) -> None:
        """Frees the request's KV. Finished and retracted requests leave their tokens in the radix
        cache for later reuse; aborted ones don't (their partial KV may be unwanted)."""
        if req.req_pool_idx is None:
            return
        slots = self.req_to_token_pool.read(req.req_pool_idx, req.kv_len)
        own = slots[req.tree_prefix_len :]
        if keep_in_cache and self.cache_enabled and req.kv_len > 0:
            already_cached = self.cache.insert(req.all_ids[: req.kv_len], slots)
            # The cache keeps its own copies of the first `already_cached` tokens; ours are spares.
            own = slots[req.tree_prefix_len : max(already_cached, req.tree_prefix_len)]
        self.allocator.free(own)
        self.cache.unlock(req.tree_node)
        self.req_to_token_pool.free(req.req_pool_idx)
        req.req_pool_idx = None
        req.tree_node = None
        req.tree_prefix_len = 0
        req.kv_len = 0

    def cache_prompt(self, req: Req) -> None:
        """Puts a freshly prefilled request's KV into the radix cache right away, so requests that
        share its prompt can reuse it while it is still decoding (SGLang's cache_unfinished_req).
        The request then holds the lock on the new node and owns no prompt slots itself."""
        if not self.cache_enabled or req.kv_len <= req.tree_prefix_len:
            return
        row = req.req_pool_idx
        ids = req.all_ids[: req.kv_len]
        slots = self.req_to_token_pool.read(row, req.kv_len)
        already_cached = self.cache.insert(ids, slots)
        self.allocator.free(slots[req.tree_prefix_len : max(already_cached, req.tree_prefix_len)])
        match = self.cache.match_prefix(ids)
        assert len(match.slots) == req.kv_len, "a just-inserted sequence must match in full"
        self.req_to_token_pool.write(row, 0, match.slots)  # spares replaced by the cache's slots
        self.cache.lock(match.last_node)
        self.cache.unlock(req.tree_node)
        req.tree_node = match.last_node
        req.tree_prefix_len = req.kv_len

    def check(self, live_reqs: Iterable[Req]) -> dict:
        """Verifies ``free + cached + request-owned == pool size`` and the cache's own integrity."""
        self.cache.check_integrity()
        request_owned = sum(
            r.kv_len - r.tree_prefix_len for r in live_reqs if r.req_pool_idx is not None
        )
        state = {
            "total": self.pool_size,
            "free": self.allocator.available_size(),
            "evictable": self.cache.evictable_size(),
            "locked": self.cache.locked_size(),
            "cached": self.cache.total_size(),
            "request_owned": request_owned,
        }
        state["ok"] = (
            state["free"] + state["cached"] + request_owned == state["total"]
            and state["evictable"] + state["locked"] == state["cached"]
        )
        return state
