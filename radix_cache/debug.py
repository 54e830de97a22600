"""Full-walk integrity check and a text dump of a radix tree (tests and idle-time checks)."""

from __future__ import annotations

from radixlm.radix_cache.node import TreeNode


def check_tree(
    root: TreeNode, leaves: set[TreeNode], evictable_size: int, locked_size: int
) -> None:
    """Raises AssertionError naming the first broken invariant.

    Checks: the root is empty and unlocked; every edge is non-empty, as long as its slot list and
    filed under its first token; parent links agree; ref counts are >= 0 and never larger on a
    child than on its (non-root) parent; parents are at least as recent as their children; no
    slot appears twice; the tracked leaf set and size counters agree with the walk.
    """

    def fail(message: str) -> None:
        raise AssertionError(f"radix cache integrity: {message}")

    if root.key or root.value or root.lock_ref != 0 or root.parent is not None:
        fail(f"root must be empty, unlocked and parentless, got {root!r}")
    seen_slots: set[int] = set()
    walked_evictable = walked_locked = 0
    walked_leaves: set[TreeNode] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        for first, child in node.children.items():
            if child.parent is not node:
                fail(f"{child!r} does not point back to its parent {node!r}")
            if not child.key:
                fail(f"empty edge at {child!r}")
            if len(child.key) != len(child.value):
                fail(f"{child!r} has {len(child.key)} tokens but {len(child.value)} slots")
            if child.key[0] != first:
                fail(f"{child!r} is filed under token {first}, its edge starts with {child.key[0]}")
            if child.lock_ref < 0:
                fail(f"negative ref count on {child!r}")
            if node is not root and node.lock_ref < child.lock_ref:
                fail(f"{child!r} has more locks than its parent {node!r}")
            if child.last_access > node.last_access and node is not root:
                fail(f"{child!r} is more recent than its parent {node!r}")
            for slot in child.value:
                if slot in seen_slots:
                    fail(f"slot {slot} appears twice (again in {child!r})")
                seen_slots.add(slot)
            if child.lock_ref > 0:
                walked_locked += len(child.key)
            else:
                walked_evictable += len(child.key)
            if not child.children:
                walked_leaves.add(child)
            stack.append(child)
    if walked_evictable != evictable_size:
        fail(f"evictable size is {evictable_size}, a full walk counts {walked_evictable}")
    if walked_locked != locked_size:
        fail(f"locked size is {locked_size}, a full walk counts {walked_locked}")
    if walked_leaves != leaves:
        fail(f"tracked leaves {sorted(n.node_id for n in leaves)} differ from the walk's")


def format_tree(root: TreeNode, max_tokens: int = 8) -> str:
    """One line per node, indented by depth: edge tokens, slots, ref count and last access."""
    lines = [f"root (children={len(root.children)})"]
    stack = [(child, 1) for child in reversed(list(root.children.values()))]
    while stack:
        node, depth = stack.pop()
        more = "..." if len(node.key) > max_tokens else ""
        lines.append(
            f"{'  ' * depth}{node.key[:max_tokens]}{more} len={len(node.key)} "
            f"slots={node.value[:max_tokens]}{more} ref={node.lock_ref} t={node.last_access}"
        )
        stack.extend((child, depth + 1) for child in reversed(list(node.children.values())))
    return "\n".join(lines)
