"""Unit tests of the radix cache: split, insert, lock, LRU eviction, reset, integrity."""

from __future__ import annotations

import time

import pytest

from radixlm.radix_cache import RadixCache


def _slots(start: int, n: int) -> list[int]:
    return list(range(start, start + n))


def test_insert_returns_already_cached_len() -> None:
    cache = RadixCache()
    assert cache.insert([1, 2, 3], [10, 11, 12]) == 0
    assert cache.insert([1, 2, 3, 4], [20, 21, 22, 23]) == 3
    assert cache.insert([1, 2], [30, 31]) == 2
    assert cache.insert([1, 2, 9], [40, 41, 42]) == 2
    assert cache.insert([], []) == 0
    # The tree kept its own slots for cached tokens and took only the new tail slots.
    assert cache.match_prefix([1, 2, 3, 4]).slots == [10, 11, 12, 23]
    assert cache.match_prefix([1, 2, 9]).slots == [10, 11, 42]
    assert cache.total_size() == 5
    cache.check_integrity()


def test_match_inside_edge_splits_it() -> None:
    cache = RadixCache()
    cache.insert([1, 2, 3, 4], [10, 11, 12, 13])
    match = cache.match_prefix([1, 2, 7, 7])
    assert match.slots == [10, 11]
    assert match.last_node.key == [1, 2]
    assert match.last_node.value == [10, 11]
    (lower,) = match.last_node.children.values()
    assert lower.key == [3, 4] and lower.value == [12, 13]
    # A query that is a strict prefix of an edge splits it too.
    short = cache.match_prefix([1])
    assert short.slots == [10] and short.last_node.key == [1]
    assert cache.total_size() == 4
    cache.check_integrity()


def test_no_match_returns_root() -> None:
    cache = RadixCache()
    cache.insert([1, 2], [10, 11])
    for query in ([], [5], [5, 1, 2]):
        match = cache.match_prefix(query)
        assert match.slots == []
        assert match.last_node is cache.root


def test_lock_protects_from_eviction() -> None:
    cache = RadixCache()
    cache.insert([1, 2, 3], [10, 11, 12])
    cache.insert([7, 8], [20, 21])
    node = cache.match_prefix([1, 2, 3]).last_node
    cache.lock(node)
    assert cache.locked_size() == 3 and cache.evictable_size() == 2
    assert sorted(cache.evict(100)) == [20, 21]
    assert cache.evict(100) == []
    assert cache.total_size() == 3
    cache.unlock(node)
    assert cache.locked_size() == 0 and cache.evictable_size() == 3
    assert sorted(cache.evict(1)) == [10, 11, 12]
    cache.check_integrity()


def test_lock_survives_a_later_split() -> None:
    cache = RadixCache()
    cache.insert([1, 2, 3, 4], [10, 11, 12, 13])
    node = cache.match_prefix([1, 2, 3, 4]).last_node
    cache.lock(node)
    # Splits the locked edge after [1, 2]; both halves must stay locked.
    assert cache.insert([1, 2, 9], [20, 21, 22]) == 2
    cache.check_integrity()
    assert cache.locked_size() == 4 and cache.evictable_size() == 1
    assert cache.evict(100) == [22]
    cache.unlock(node)
    assert cache.locked_size() == 0
    assert sorted(cache.evict(100)) == [10, 11, 12, 13]
    cache.check_integrity()


def test_lock_counts_nest() -> None:
    cache = RadixCache()
    cache.insert([1, 2, 3], [10, 11, 12])
    deep = cache.match_prefix([1, 2, 3]).last_node
    shallow = cache.match_prefix([1]).last_node
    cache.lock(deep)
    cache.lock(shallow)
    assert shallow.lock_ref == 2 and deep.lock_ref == 1
    cache.unlock(deep)
    # [2, 3] is free again, [1] still held.
    assert cache.locked_size() == 1 and cache.evict(10) == [11, 12]
    cache.unlock(shallow)
    with pytest.raises(AssertionError):
        cache.unlock(shallow)


def test_lock_and_unlock_root_are_noops() -> None:
    cache = RadixCache()
    cache.insert([1], [10])
    match = cache.match_prefix([5])
    cache.lock(match.last_node)
    cache.unlock(match.last_node)
    assert cache.locked_size() == 0 and cache.root.lock_ref == 0


def test_evict_in_lru_order() -> None:
    cache = RadixCache()
    cache.insert([1, 1], [10, 11])
    cache.insert([2, 2], [20, 21])
    cache.insert([3, 3], [30, 31])
    cache.match_prefix([1, 1])  # [1, 1] becomes most recent; [2, 2] is now the oldest
    assert cache.evict(1) == [20, 21]
    assert cache.evict(2) == [30, 31]
    assert cache.evict(2) == [10, 11]
    assert cache.total_size() == 0


def test_partial_match_refreshes_only_the_matched_part() -> None:
    cache = RadixCache()
    cache.insert([1, 2, 3], [10, 11, 12])
    cache.insert([5], [50])
    cache.match_prefix([1])  # touches [1] only: [2, 3] keeps its old timestamp
    assert cache.evict(1) == [11, 12]
    assert cache.evict(1) == [50]


def test_evicting_children_makes_parent_a_leaf_in_the_same_call() -> None:
    cache = RadixCache()
    cache.insert([1, 2, 3], [10, 11, 12])
    cache.insert([1, 2, 4], [20, 21, 22])
    freed = cache.evict(4)
    assert sorted(freed) == [10, 11, 12, 22]
    assert cache.total_size() == 0
    cache.check_integrity()


def test_evict_stops_once_enough_is_freed() -> None:
    cache = RadixCache()
    for first in range(5):
        cache.insert([first, 9], _slots(10 * first, 2))
    freed = cache.evict(3)
    assert len(freed) == 4  # whole leaves: two leaves of two tokens
    assert cache.total_size() == 6
    assert cache.evict(0) == []


def test_reset_returns_every_slot() -> None:
    cache = RadixCache()
    cache.insert([1, 2, 3], [10, 11, 12])
    cache.insert([1, 4], [20, 21])
    node = cache.match_prefix([1, 4]).last_node
    cache.lock(node)
    with pytest.raises(AssertionError):
        cache.reset()
    cache.unlock(node)
    assert sorted(cache.reset()) == [10, 11, 12, 21]
    assert cache.total_size() == 0 and cache.match_prefix([1]).slots == []
    cache.check_integrity()


def test_evicted_node_cannot_be_locked() -> None:
    cache = RadixCache()
    cache.insert([1, 2], [10, 11])
    node = cache.match_prefix([1, 2]).last_node
    cache.evict(2)
    with pytest.raises(AssertionError):
        cache.lock(node)


def test_disabled_cache_stores_nothing() -> None:
    cache = RadixCache(disabled=True)
    assert cache.insert([1, 2, 3], [10, 11, 12]) == 0
    match = cache.match_prefix([1, 2, 3])
    assert match.slots == [] and match.last_node is cache.root
    cache.lock(match.last_node)
    cache.unlock(match.last_node)
    assert cache.total_size() == 0 and cache.evict(5) == [] and cache.reset() == []


@pytest.mark.parametrize("corruption", ["lock_ref", "duplicate_slot", "wrong_child_key", "size"])
def test_check_integrity_detects_corruption(corruption: str) -> None:
    cache = RadixCache()
    cache.insert([1, 2, 3], [10, 11, 12])
    cache.insert([1, 5], [20, 21])
    cache.check_integrity()
    parent = cache.match_prefix([1]).last_node
    child = parent.children[5]
    if corruption == "lock_ref":
        child.lock_ref = 1  # child locked more than its parent, and sizes no longer agree
    elif corruption == "duplicate_slot":
        child.value = [10]
    elif corruption == "wrong_child_key":
        child.key = [6]
    else:
        cache._evictable_size += 1
    with pytest.raises(AssertionError, match="integrity"):
        cache.check_integrity()


def test_pretty_lists_edges() -> None:
    cache = RadixCache()
    cache.insert([1, 2, 3], [10, 11, 12])
    cache.insert([1, 2, 4], [20, 21, 22])
    text = cache.pretty()
    assert "[1, 2] len=2" in text and "[3] len=1" in text and "[4] len=1" in text


def test_match_and_insert_are_linear_in_length() -> None:
    """A 200k-token sequence: quadratic comparisons would take minutes, linear ones milliseconds."""
    cache = RadixCache()
    ids = [i % 1000 for i in range(200_000)]
    cache.insert(ids, _slots(0, len(ids)))
    # Branches along the way, so the path has many edges. The leading slots are duplicates the
    # tree does not take.
    for cut in range(10_000, 200_000, 10_000):
        assert cache.insert([*ids[:cut], -1], [-1] * cut + [10**6 + cut]) == cut
    start = time.perf_counter()
    for _ in range(5):
        assert len(cache.match_prefix(ids).slots) == len(ids)
    assert time.perf_counter() - start < 2.0
    cache.check_integrity()
