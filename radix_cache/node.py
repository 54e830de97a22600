"""Tree node and match result of the radix cache."""

from __future__ import annotations

import itertools
from typing import NamedTuple

# Node ids break LRU ties deterministically (older node first) and make nodes sortable in heaps.
_node_ids = itertools.count()


class TreeNode:
    """One edge of the radix tree plus the node it leads to.

    ``key`` holds the token ids on the edge from the parent, ``value`` the KV slot of each of those
    tokens (same length). ``lock_ref`` counts running requests whose matched prefix passes through
    this node; locked nodes are never evicted. ``last_access`` is a logical clock value (larger =
    more recent) used for LRU eviction.
    """

    __slots__ = ("key", "value", "children", "parent", "lock_ref", "last_access", "node_id")

    def __init__(
        self,
        key: list[int],
        value: list[int],
        parent: TreeNode | None,
        last_access: int = 0,
        lock_ref: int = 0,
    ) -> None:
        self.key = key
        self.value = value
        # Keyed by the first token of each child's edge: edges out of a node start with distinct tokens.
        self.children: dict[int, TreeNode] = {}
        self.parent = parent
        self.lock_ref = lock_ref
        self.last_access = last_access
        self.node_id = next(_node_ids)

    @property
    def is_root(self) -> bool:
        return self.parent is None

    def __repr__(self) -> str:
        head = self.key[:8]
        more = "..." if len(self.key) > 8 else ""
        return f"TreeNode(id={self.node_id}, key={head}{more}, len={len(self.key)}, ref={self.lock_ref})"


class MatchResult(NamedTuple):
    """The longest cached prefix: its KV slots and the node that ends exactly at its last token."""

    slots: list[int]
    last_node: TreeNode
