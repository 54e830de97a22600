"""Small helpers every process uses: dying with the parent, and one log format."""

from __future__ import annotations

import ctypes
import logging
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies, so no child is ever orphaned."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # The launcher owns shutdown. Ctrl-C in a terminal reaches the whole process group, and so
    # does a service manager's SIGTERM (systemd's default); children ignore both, so in-flight
    # requests drain before the launcher stops them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def setup_logging(level: str, process_name: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format=f"[%(asctime)s {process_name}] %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
