"""release_free_heap gives memory glibc keeps in its heap back to the OS, and says how much."""

from __future__ import annotations

import ctypes
import sys

import pytest

from radixlm.runtime.process_utils import release_free_heap, resident_bytes

CHUNK_BYTES = 64 * 1024  # below glibc's mmap threshold: served from the heap
CHUNKS = 1600  # 100 MiB


def resident_mib() -> float:
    return resident_bytes() / (1 << 20)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc heaps")
def test_freed_heap_pages_go_back_to_the_os():
    libc = ctypes.CDLL("libc.so.6")
    if not hasattr(libc, "malloc_trim"):
        pytest.skip("not glibc")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    chunks = [libc.malloc(CHUNK_BYTES) for _ in range(CHUNKS)]
    for chunk in chunks:
        ctypes.memset(chunk, 1, CHUNK_BYTES)  # touch every page
    pin = libc.malloc(CHUNK_BYTES)  # above the chunks: glibc cannot shrink the heap's top
    before_free = resident_mib()
    for chunk in chunks:
        libc.free(chunk)
    kept = resident_mib()
    released_mib = release_free_heap() / (1 << 20)
    after = resident_mib()
    libc.free(pin)
    assert kept > before_free - 20  # glibc kept the freed pages (the memory a server creeps by)
    assert after < kept - 80  # and handed them back
    assert released_mib == pytest.approx(kept - after, abs=2)
