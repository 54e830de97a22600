"""The CPU KV pool: zero, writable, and resident only where slots have been written."""

from __future__ import annotations

import ctypes
import os
import sys

import pytest
import torch

from radixlm.runtime.memory_pool import KVCache


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pool_starts_zero_and_stores_rows(dtype):
    cache = KVCache(size=64, num_layers=2, num_kv_heads=3, head_dim=8, dtype=dtype, device="cpu")
    assert cache.k_buffer[1].shape == (65, 3, 8) and cache.k_buffer[1].dtype == dtype
    assert not cache.k_buffer[0].any() and not cache.v_buffer[1].any()
    k, v = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    cache.write(1, torch.tensor([5, 9]), k, v)
    assert torch.equal(cache.k_buffer[1][[5, 9]], k.to(dtype))
    assert torch.equal(cache.v_buffer[1][[5, 9]], v.to(dtype))
    assert not cache.k_buffer[0].any()  # other layers untouched


def resident_share(t: torch.Tensor) -> float:
    """The share of the tensor's memory pages that are resident (mincore): measured on the
    buffer itself, so memory other tests free meanwhile cannot blur it as it blurs the RSS."""
    page = os.sysconf("SC_PAGE_SIZE")
    start = t.data_ptr() // page * page
    length = t.data_ptr() + t.numel() * t.element_size() - start
    pages = (ctypes.c_ubyte * -(-length // page))()
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(length), pages) == 0
    return sum(p & 1 for p in pages) / len(pages)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mincore on Linux")
def test_pool_costs_resident_memory_only_where_written():
    # 2 layers x 2 buffers x 64 MiB = 256 MiB of pool.
    cache = KVCache(size=(1 << 20) - 1, num_layers=2, num_kv_heads=1, head_dim=16,
                    dtype=torch.float32, device="cpu")  # fmt: skip
    buffers = cache.k_buffer + cache.v_buffer
    assert all(resident_share(b) < 0.01 for b in buffers)
    cache.k_buffer[0][: 1 << 19] = 1.0  # the first half of one buffer
    assert 0.49 < resident_share(cache.k_buffer[0]) < 0.52
    assert all(resident_share(b) < 0.01 for b in buffers[1:])
