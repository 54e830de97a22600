"""Small helpers every process uses: dying with the parent, memory hygiene, one log format."""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None


def die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies, so no child is ever orphaned."""
    if (libc := _libc()) is not None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # The launcher owns shutdown. Ctrl-C in a terminal reaches the whole process group, and so
    # does a service manager's SIGTERM (systemd's default); children ignore both, so in-flight
    # requests drain before the launcher stops them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def resident_bytes(pid: int | str = "self") -> int:
    """A process's resident memory (Linux; 0 where /proc is missing or the process is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def release_free_heap() -> int:
    """Hands memory glibc keeps for reuse back to the OS; returns the resident bytes freed.

    Passes of ever-changing shapes free tensors of ever-changing sizes; glibc keeps the freed
    pages in its heaps, so a long-running scheduler's resident memory creeps up. The scheduler
    calls this once it has been idle a while, where giving the pages back costs no pass anything.
    """
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):  # glibc only (not musl)
        return 0
    before = resident_bytes()
    libc.malloc_trim(0)
    return max(0, before - resident_bytes())


def setup_logging(level: str, process_name: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format=f"[%(asctime)s {process_name}] %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
