"""Radix tree over token ids: cached prefix -> KV slots, with ref counts and LRU eviction.

Standard library only (see DESIGN.md §3): the scheduler and tests drive it with plain ints.
"""

from radixlm.radix_cache.cache import RadixCache
from radixlm.radix_cache.node import MatchResult, TreeNode

__all__ = ["MatchResult", "RadixCache", "TreeNode"]
