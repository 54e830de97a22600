"""The compiled CPU decode-attention kernel against the pure-torch paged reference."""

from __future__ import annotations

import pytest
import torch

from radixlm.kernels.cpu_decode_attention import load_cpu_decode_attention
from radixlm.kernels.reference import paged_attention_reference

kernel = load_cpu_decode_attention()
pytestmark = pytest.mark.skipif(kernel is None, reason="no C++ compiler for the CPU kernel")

NUM_SLOTS = 2048


def _inputs(heads: int, kv_heads: int, head_dim: int, seq_lens: list[int], dtype, seed: int):
    generator = torch.Generator().manual_seed(seed)
    k_buffer = torch.randn(NUM_SLOTS, kv_heads, head_dim, generator=generator).to(dtype)
    v_buffer = torch.randn(NUM_SLOTS, kv_heads, head_dim, generator=generator).to(dtype)
    max_len = max(seq_lens)
    # Scattered slots, as a pool holds them after evictions; padding entries are stale slots.
    slots = torch.stack(
        [torch.randperm(NUM_SLOTS, generator=generator)[:max_len] for _ in seq_lens]
    )
    q = torch.randn(len(seq_lens), heads, head_dim, generator=generator)
    return q, k_buffer, v_buffer, slots


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(9, 3, 64), (8, 8, 128), (28, 4, 64)])
def test_matches_the_paged_reference(dtype, heads, kv_heads, head_dim):
    seq_lens = [1, 7, 300, 64, 129]
    q, k_buffer, v_buffer, slots = _inputs(heads, kv_heads, head_dim, seq_lens, dtype, seed=1)
    scale = head_dim**-0.5
    expected = paged_attention_reference(
        q, k_buffer, v_buffer, slots, list(range(len(seq_lens))), seq_lens, [1] * len(seq_lens),
        scale,
    )  # fmt: skip
    out = kernel(q, k_buffer, v_buffer, slots, torch.tensor(seq_lens), scale)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_a_row_gets_the_same_bits_alone_and_in_a_batch():
    seq_lens = [5, 200, 33, 1]
    q, k_buffer, v_buffer, slots = _inputs(9, 3, 64, seq_lens, torch.float32, seed=2)
    together = kernel(q, k_buffer, v_buffer, slots, torch.tensor(seq_lens), 0.125)
    for row, seq_len in enumerate(seq_lens):
        alone = kernel(
            q[row : row + 1].contiguous(),
            k_buffer,
            v_buffer,
            slots[row : row + 1, :seq_len].contiguous(),
            torch.tensor([seq_len]),
            0.125,
        )
        assert torch.equal(alone[0], together[row])
