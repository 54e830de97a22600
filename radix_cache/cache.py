"""Token-level radix tree mapping cached token-id prefixes to their KV slots (page size 1).

Ownership contract with the KV allocator: every slot stored in the tree belongs to the tree until
``evict`` or ``reset`` hands it back. ``insert`` never takes a slot for a token that is already
cached; the caller keeps (and frees) its duplicate slots for those positions.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from radixlm.radix_cache.debug import check_tree, format_tree
from radixlm.radix_cache.node import MatchResult, TreeNode


class RadixCache:
    def __init__(self, disabled: bool = False) -> None:
        self.disabled = disabled
        self.root = TreeNode([], [], parent=None)
        # A logical clock instead of wall time: strictly ordered, so LRU order is reproducible.
        self._clock = 0
        # All leaves (locked or not), so eviction never walks the whole tree.
        self._leaves: set[TreeNode] = set()
        self._evictable_size = 0
        self._locked_size = 0

    # ---- lookup and insertion -------------------------------------------------------------

    def match_prefix(self, token_ids: Sequence[int]) -> MatchResult:
        """KV slots of the longest cached prefix of ``token_ids``.

        When the match ends inside an edge, that edge is split so ``last_node`` covers exactly the
        match (locking it then protects only the matched tokens). Every node on the path becomes
        most-recently-used. A disabled cache always returns an empty match at the root.
        """
        if self.disabled:
            return MatchResult([], self.root)
        node, slots = self._descend(list(token_ids), self._tick())
        return MatchResult(slots, node)

    def insert(self, token_ids: Sequence[int], slots: Sequence[int]) -> int:
        """Caches ``token_ids`` with their KV ``slots``; returns how many leading tokens were cached
        already. The tree keeps its own slots for those; ``slots[:returned]`` stay the caller's to
        free. A disabled cache stores nothing and returns 0."""
        assert len(token_ids) == len(slots), (len(token_ids), len(slots))
        if self.disabled:
            return 0
        ids = list(token_ids)
        now = self._tick()
        node, cached_slots = self._descend(ids, now)
        num_cached = len(cached_slots)
        if num_cached < len(ids):
            leaf = TreeNode(ids[num_cached:], list(slots[num_cached:]), node, last_access=now)
            node.children[leaf.key[0]] = leaf
            self._leaves.discard(node)
            self._leaves.add(leaf)
            self._evictable_size += len(leaf.key)
        return num_cached

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def _descend(self, ids: list[int], now: int) -> tuple[TreeNode, list[int]]:
        """Follows ``ids`` down from the root, stamping each visited node with ``now``.

        Returns the node ending exactly at the longest cached prefix (splitting the last edge when
        the match stops inside it) and the slots of that prefix. Whole edges are compared as list
        slices (C speed); only the final, partially matching edge is scanned token by token, so
        the cost is O(len(ids)).
        """
        node = self.root
        node.last_access = now
        slots: list[int] = []
        pos = 0
        while pos < len(ids):
            child = node.children.get(ids[pos])
            if child is None:
                break
            edge_len = len(child.key)
            if ids[pos : pos + edge_len] == child.key:
                matched = edge_len
            else:
                matched = _common_prefix_len(child.key, ids, pos)
                child = self._split(child, matched)
            child.last_access = now
            slots.extend(child.value)
            pos += matched
            node = child
            if matched < edge_len:
                break
        return node, slots

    def _split(self, child: TreeNode, at: int) -> TreeNode:
        """Cuts ``child``'s edge after ``at`` tokens; returns the new upper node.

        The upper node inherits the lock count and timestamp: every lock and access that passed
        through ``child`` passed through both halves, so sizes and LRU order are unchanged.
        """
        assert 0 < at < len(child.key)
        parent = child.parent
        assert parent is not None
        upper = TreeNode(
            child.key[:at],
            child.value[:at],
            parent,
            last_access=child.last_access,
            lock_ref=child.lock_ref,
        )
        parent.children[upper.key[0]] = upper
        child.key = child.key[at:]
        child.value = child.value[at:]
        child.parent = upper
        upper.children[child.key[0]] = child
        return upper

    # ---- reference counts -----------------------------------------------------------------

    def lock(self, node: TreeNode) -> None:
        """Protects ``node`` and its ancestors from eviction (one more running user)."""
        while node is not self.root:
            assert node.parent is not None, f"lock on an evicted node {node!r}"
            if node.lock_ref == 0:
                self._evictable_size -= len(node.key)
                self._locked_size += len(node.key)
            node.lock_ref += 1
            node = node.parent

    def unlock(self, node: TreeNode) -> None:
        """Undoes one ``lock(node)``."""
        while node is not self.root:
            assert node.parent is not None, f"unlock on an evicted node {node!r}"
            assert node.lock_ref > 0, f"unlock below zero on {node!r}"
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self._locked_size -= len(node.key)
                self._evictable_size += len(node.key)
            node = node.parent

    # ---- eviction -------------------------------------------------------------------------

    def evict(self, num_tokens: int) -> list[int]:
        """Frees least-recently-used unlocked leaves until at least ``num_tokens`` slots are freed
        or nothing is evictable; returns the freed slots (now the caller's).

        A parent whose last child goes becomes a leaf and a candidate in the same call. Parents
        are never more recent than their children, so freeing runs in LRU order.
        """
        if num_tokens <= 0:
            return []
        heap = [(n.last_access, n.node_id, n) for n in self._leaves if n.lock_ref == 0]
        heapq.heapify(heap)
        freed: list[int] = []
        while heap and len(freed) < num_tokens:
            _, _, leaf = heapq.heappop(heap)
            parent = leaf.parent
            assert parent is not None
            freed.extend(leaf.value)
            self._evictable_size -= len(leaf.key)
            del parent.children[leaf.key[0]]
            self._leaves.discard(leaf)
            leaf.parent = None  # detached: lock/unlock on it now fail loudly
            if parent is not self.root and not parent.children:
                self._leaves.add(parent)
                if parent.lock_ref == 0:
                    heapq.heappush(heap, (parent.last_access, parent.node_id, parent))
        return freed

    def reset(self) -> list[int]:
        """Drops every cached prefix and returns all slots. Nothing may be locked."""
        assert self._locked_size == 0, f"reset while {self._locked_size} cached tokens are locked"
        slots: list[int] = []
        stack = [self.root]
        while stack:
            node = stack.pop()
            slots.extend(node.value)
            stack.extend(node.children.values())
        self.root = TreeNode([], [], parent=None)
        self._leaves = set()
        self._evictable_size = 0
        return slots

    # ---- sizes and debugging --------------------------------------------------------------

    def evictable_size(self) -> int:
        """Cached tokens in unlocked nodes (what ``evict`` could free)."""
        return self._evictable_size

    def locked_size(self) -> int:
        """Cached tokens in nodes some running request holds."""
        return self._locked_size

    def total_size(self) -> int:
        """All cached tokens; always ``evictable_size() + locked_size()``."""
        return self._evictable_size + self._locked_size

    def check_integrity(self) -> None:
        """Raises AssertionError describing the first broken invariant found by a full walk."""
        check_tree(self.root, self._leaves, self._evictable_size, self._locked_size)

    def pretty(self) -> str:
        return format_tree(self.root)


def _common_prefix_len(key: list[int], ids: list[int], start: int) -> int:
    """Length of the common prefix of ``key`` and ``ids[start:]``."""
    limit = min(len(key), len(ids) - start)
    i = 0
    while i < limit and key[i] == ids[start + i]:
        i += 1
    return i
