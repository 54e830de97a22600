"""The compiled CPU paged-attention kernel against the pure-torch paged reference."""

from __future__ import annotations

import pytest
import torch

from radixlm.kernels.cpu_paged_attention import load_cpu_paged_attention, rounds_bf16_queries
from radixlm.kernels.reference import paged_attention_reference

kernel = load_cpu_paged_attention()
pytestmark = pytest.mark.skipif(kernel is None, reason="no C++ compiler for the CPU kernel")

NUM_SLOTS = 2048


def _inputs(heads: int, kv_heads: int, head_dim: int, seq_lens: list[int], extend_lens, dtype):
    generator = torch.Generator().manual_seed(sum(seq_lens) + heads)
    k_buffer = torch.randn(NUM_SLOTS, kv_heads, head_dim, generator=generator).to(dtype)
    v_buffer = torch.randn(NUM_SLOTS, kv_heads, head_dim, generator=generator).to(dtype)
    max_len = max(seq_lens)
    # Scattered slots, as a pool holds them after evictions; padding entries are stale slots.
    slots = torch.stack(
        [torch.randperm(NUM_SLOTS, generator=generator)[:max_len] for _ in seq_lens]
    )
    q = torch.randn(sum(extend_lens), heads, head_dim, generator=generator)
    return q, k_buffer, v_buffer, slots


def _reference(q, k_buffer, v_buffer, slots, seq_lens, extend_lens, scale):
    """The reference on the queries as the kernel multiplies them: with AVX512-BF16 dot
    products against a bfloat16 pool (head_dim 32 and up), rounded to bfloat16."""
    if k_buffer.dtype == torch.bfloat16 and rounds_bf16_queries() and q.shape[-1] >= 32:
        q = q.bfloat16().float()
    indices = list(range(len(seq_lens)))
    return paged_attention_reference(
        q, k_buffer, v_buffer, slots, indices, seq_lens, extend_lens, scale
    )


def _run(q, k_buffer, v_buffer, slots, seq_lens, extend_lens, scale):
    no_prompt_rows = torch.zeros(len(seq_lens), dtype=torch.int64)
    return kernel(
        q,
        k_buffer,
        v_buffer,
        slots,
        torch.tensor(seq_lens),
        torch.tensor(extend_lens),
        no_prompt_rows,
        scale,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("heads", "kv_heads", "head_dim"),
    [(9, 3, 64), (8, 8, 128), (28, 4, 64), (4, 2, 16), (6, 1, 32)],
)
@pytest.mark.parametrize(
    ("seq_lens", "extend_lens"),
    [
        ([1, 7, 300, 64, 129], [1, 1, 1, 1, 1]),  # decode
        ([300, 77, 9], [300, 20, 9]),  # a whole prompt, a chunk after a prefix, a short prompt
        ([130, 5, 200, 1], [1, 5, 67, 1]),  # decode rows beside extends (jump-forward passes)
    ],
)
def test_matches_the_paged_reference(dtype, heads, kv_heads, head_dim, seq_lens, extend_lens):
    q, k_buffer, v_buffer, slots = _inputs(heads, kv_heads, head_dim, seq_lens, extend_lens, dtype)
    scale = head_dim**-0.5
    expected = _reference(q, k_buffer, v_buffer, slots, seq_lens, extend_lens, scale)
    out = _run(q, k_buffer, v_buffer, slots, seq_lens, extend_lens, scale)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_a_row_gets_the_same_bits_alone_and_in_a_batch():
    seq_lens, extend_lens = [5, 200, 33, 1], [1, 1, 33, 1]
    q, k_buffer, v_buffer, slots = _inputs(9, 3, 64, seq_lens, extend_lens, torch.float32)
    together = _run(q, k_buffer, v_buffer, slots, seq_lens, extend_lens, 0.125)
    start = 0
    for row, (seq_len, extend_len) in enumerate(zip(seq_lens, extend_lens, strict=True)):
        rows = slice(start, start + extend_len)
        alone = _run(
            q[rows].contiguous(), k_buffer, v_buffer, slots[row : row + 1, :seq_len].contiguous(),
            [seq_len], [extend_len], 0.125,
        )  # fmt: skip
        assert torch.equal(alone, together[rows])
        start += extend_len


def test_a_token_gets_the_same_bits_in_a_prefill_chunk_and_as_a_decode_row():
    # Jump-forward appends forced tokens in one extend pass instead of one decode pass each:
    # their attention must not change with the route they take. The chunk has enough items of
    # 8 tokens to cover every KV head per item; a decode row alone is split per KV head.
    extend_len = 8 * (4 * torch.get_num_threads() + 1)
    seq_len = extend_len + 110
    q, k_buffer, v_buffer, slots = _inputs(9, 3, 64, [seq_len], [extend_len], torch.bfloat16)
    chunk = _run(q, k_buffer, v_buffer, slots, [seq_len], [extend_len], 0.125)
    prefix = seq_len - extend_len
    for t in (0, 7, 8, extend_len - 1):
        decoded = _run(
            q[t : t + 1].contiguous(), k_buffer, v_buffer, slots, [prefix + t + 1], [1], 0.125
        )
        assert torch.equal(decoded[0], chunk[t])


def _sharing_inputs(heads, kv_heads, head_dim, dtype, shares: list[tuple[int, int]]):
    """Decode rows whose sequences begin with the same slots, as the radix cache hands them
    out: per (sequences, keys shared) a group of sequences of 1-3 blocks more than that, the
    rest of each row its own; then a prompt chunk and a row sharing only its first slot."""
    generator = torch.Generator().manual_seed(head_dim + len(shares))
    seq_lens, extend_lens, rows = [], [], []
    free = torch.randperm(NUM_SLOTS, generator=generator).tolist()
    for count, shared in shares:
        prefix = [free.pop() for _ in range(shared)]
        for i in range(count):
            seq_lens.append(shared + 1 + 17 * (i % 3) + i)
            rows.append(prefix + [free.pop() for _ in range(seq_lens[-1] - shared)])
            extend_lens.append(1)
    seq_lens += [90, 120]
    extend_lens += [30, 1]
    rows.append([free.pop() for _ in range(90)])
    rows.append(rows[0][:1] + [free.pop() for _ in range(119)])
    max_len = max(seq_lens)
    slots = torch.tensor([row + row[:1] * (max_len - len(row)) for row in rows])
    k_buffer = torch.randn(NUM_SLOTS, kv_heads, head_dim, generator=generator).to(dtype)
    v_buffer = torch.randn(NUM_SLOTS, kv_heads, head_dim, generator=generator).to(dtype)
    q = torch.randn(sum(extend_lens), heads, head_dim, generator=generator)
    return q, k_buffer, v_buffer, slots, seq_lens, extend_lens


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("heads", "kv_heads", "head_dim", "shares"),
    [
        (9, 3, 64, [(11, 200), (5, 70), (2, 40)]),  # groups of 8 + 3, one of 5, one too short
        (8, 8, 128, [(3, 130)]),  # few items: split per KV head
        (4, 2, 16, [(9, 64)]),
    ],
)
def test_decode_rows_sharing_a_cached_prefix(dtype, heads, kv_heads, head_dim, shares):
    """Rows sharing a prefix attend over it together: the reference's values, and each row's
    bits the same as alone."""
    q, k_buffer, v_buffer, slots, seq_lens, extend_lens = _sharing_inputs(
        heads, kv_heads, head_dim, dtype, shares
    )
    scale = head_dim**-0.5
    together = _run(q, k_buffer, v_buffer, slots, seq_lens, extend_lens, scale)
    expected = _reference(q, k_buffer, v_buffer, slots, seq_lens, extend_lens, scale)
    torch.testing.assert_close(together, expected, rtol=1e-5, atol=1e-5)
    start = 0
    for row, (seq_len, extend_len) in enumerate(zip(seq_lens, extend_lens, strict=True)):
        rows = slice(start, start + extend_len)
        alone = _run(
            q[rows].contiguous(), k_buffer, v_buffer, slots[row : row + 1, :seq_len].contiguous(),
            [seq_len], [extend_len], scale,
        )  # fmt: skip
        assert torch.equal(alone, together[rows]), row
        start += extend_len


def test_rejects_a_head_dim_it_cannot_vectorize():
    q, k_buffer, v_buffer, slots = _inputs(2, 1, 12, [4], [4], torch.float32)
    with pytest.raises(RuntimeError, match="16, 32, 64 or 128"):
        _run(q, k_buffer, v_buffer, slots, [4], [4], 0.3)


def test_reads_queries_from_a_view_of_wider_rows():
    """q as the runtime passes it: the first heads of the rotated [q | k] rows, not copied."""
    seq_lens, extend_lens = [40, 9, 120], [1, 9, 30]
    q, k_buffer, v_buffer, slots = _inputs(9, 3, 64, seq_lens, extend_lens, torch.bfloat16)
    qk = torch.cat([q, torch.randn(q.shape[0], 3, 64)], dim=1)  # (tokens, 9 + 3, 64)
    view = qk[:, :9]
    assert not view.is_contiguous()
    out = _run(view, k_buffer, v_buffer, slots, seq_lens, extend_lens, 0.125)
    assert out.is_contiguous()
    assert torch.equal(out, _run(q, k_buffer, v_buffer, slots, seq_lens, extend_lens, 0.125))
    spread = torch.stack([q, q], dim=2).view(q.shape[0], 18, 64)[:, ::2]  # heads 128 apart
    assert torch.equal(spread, q)
    with pytest.raises(RuntimeError):  # not a layout it reads
        _run(spread, k_buffer, v_buffer, slots, seq_lens, extend_lens, 0.125)
