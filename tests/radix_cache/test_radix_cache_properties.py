"""Property tests: random insert/match/lock/unlock/evict/reset sequences against a naive reference.

The reference is a dict from every cached prefix (a tuple of token ids) to the KV slot of its last
token, plus a logical access time per prefix. The tree must agree with it on matches, sizes and
which slots eviction frees, and no slot may ever be lost or handed out twice.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from radixlm.radix_cache import RadixCache, TreeNode

# A tiny alphabet makes shared prefixes, splits and branching common.
token_seqs = st.lists(st.integers(min_value=0, max_value=3), min_size=0, max_size=8)

Prefix = tuple[int, ...]


class RadixCacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cache = RadixCache()
        self.ref: dict[Prefix, int] = {}  # cached prefix -> slot of its last token
        self.access: dict[Prefix, int] = {}  # cached prefix -> last time an op touched it
        self.clock = 0
        self.locks: list[tuple[TreeNode, Prefix]] = []
        self.next_slot = 0
        self.all_slots: set[int] = set()
        self.returned: set[int] = set()  # slots given back: caller duplicates, evicted, reset

    # ---- reference helpers ----------------------------------------------------------------

    def _cached_len(self, seq: list[int]) -> int:
        n = 0
        while n < len(seq) and tuple(seq[: n + 1]) in self.ref:
            n += 1
        return n

    def _touch(self, seq: list[int], n: int) -> None:
        self.clock += 1
        for i in range(1, n + 1):
            self.access[tuple(seq[:i])] = self.clock

    def _locked_prefixes(self) -> set[Prefix]:
        return {prefix[:i] for _, prefix in self.locks for i in range(1, len(prefix) + 1)}

    def _return(self, slots: list[int]) -> None:
        assert len(set(slots)) == len(slots), f"slots returned twice in one call: {slots}"
        assert not self.returned & set(slots), "a slot was returned twice"
        self.returned.update(slots)

    # ---- operations -----------------------------------------------------------------------

    @rule(seq=token_seqs)
    def insert(self, seq: list[int]) -> None:
        slots = list(range(self.next_slot, self.next_slot + len(seq)))
        self.next_slot += len(seq)
        self.all_slots.update(slots)
        expected = self._cached_len(seq)
        assert self.cache.insert(seq, slots) == expected
        self._return(slots[:expected])  # the caller frees its duplicates
        for i in range(expected + 1, len(seq) + 1):
            self.ref[tuple(seq[:i])] = slots[i - 1]
        self._touch(seq, len(seq))

    @rule(seq=token_seqs, lock=st.booleans())
    def match(self, seq: list[int], lock: bool) -> None:
        n = self._cached_len(seq)
        result = self.cache.match_prefix(seq)
        assert result.slots == [self.ref[tuple(seq[:i])] for i in range(1, n + 1)]
        assert (result.last_node is self.cache.root) == (n == 0)
        self._touch(seq, n)
        if lock:
            self.cache.lock(result.last_node)
            self.locks.append((result.last_node, tuple(seq[:n])))

    @precondition(lambda self: self.locks)
    @rule(data=st.data())
    def unlock(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.locks) - 1))
        node, _ = self.locks.pop(index)
        self.cache.unlock(node)

    @rule(num_tokens=st.integers(min_value=0, max_value=12))
    def evict(self, num_tokens: int) -> None:
        locked = self._locked_prefixes()
        freed = self.cache.evict(num_tokens)
        self._return(freed)
        freed_set = set(freed)
        removed_slots = {p: slot for p, slot in self.ref.items() if slot in freed_set}
        removed = set(removed_slots)
        assert len(removed) == len(freed), "evict returned slots the cache did not hold"
        assert not removed & locked, "evict freed a locked prefix"
        for p in removed:
            del self.ref[p]
        for p in self.ref:
            assert len(p) == 1 or p[:-1] in self.ref, f"evict left {p} without its parent"
        remaining_unlocked = len(self.ref) - len(locked)
        assert len(freed) >= num_tokens or remaining_unlocked == 0
        # No overshoot: freeing stopped right after the node that reached the target. That node is
        # the run at the end of `freed` where each slot's prefix extends the previous one.
        slot_prefix = {slot: p for p, slot in removed_slots.items()}
        last_node_len = 1 if freed else 0
        while last_node_len < len(freed):
            before = slot_prefix[freed[-last_node_len - 1]]
            if slot_prefix[freed[-last_node_len]][:-1] != before:
                break
            last_node_len += 1
        assert not freed or len(freed) - last_node_len < num_tokens
        # LRU: nothing freed was touched more recently than any unlocked leaf left behind.
        parents = {p[:-1] for p in self.ref}
        left_leaves = [p for p in self.ref if p not in parents and p not in locked]
        if removed and left_leaves:
            assert max(self.access[p] for p in removed) <= min(self.access[p] for p in left_leaves)

    @precondition(lambda self: not self.locks)
    @rule()
    def reset(self) -> None:
        slots = self.cache.reset()
        assert sorted(slots) == sorted(self.ref.values())
        self._return(slots)
        self.ref.clear()

    # ---- checked after every step ---------------------------------------------------------

    @invariant()
    def tree_agrees_with_reference(self) -> None:
        self.cache.check_integrity()
        locked = self._locked_prefixes()
        assert self.cache.total_size() == len(self.ref)
        assert self.cache.locked_size() == len(locked)
        assert self.cache.evictable_size() == len(self.ref) - len(locked)
        # Conservation: every slot ever handed to the cache is either cached or returned, once.
        cached = set(self.ref.values())
        assert len(cached) == len(self.ref)
        assert not cached & self.returned
        assert cached | self.returned == self.all_slots


RadixCacheMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None
)
test_radix_cache_against_reference = RadixCacheMachine.TestCase
