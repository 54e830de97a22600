"""The CPU KV pool: zero, writable, and resident only where slots have been written."""

from __future__ import annotations

import sys

import pytest
import torch

from radixlm.runtime.memory_pool import KVCache
from radixlm.runtime.process_utils import resident_bytes

MIB = 1 << 20


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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pool_costs_resident_memory_only_where_written():
    before = resident_bytes()
    # 2 layers x 2 buffers x 64 MiB = 256 MiB of pool.
    cache = KVCache(size=(1 << 20) - 1, num_layers=2, num_kv_heads=1, head_dim=16,
                    dtype=torch.float32, device="cpu")  # fmt: skip
    assert resident_bytes() - before < 32 * MIB
    cache.k_buffer[0][: 1 << 19] = 1.0  # touch 32 MiB
    assert 24 * MIB < resident_bytes() - before < 64 * MIB
