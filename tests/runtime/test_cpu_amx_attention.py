"""Prompt rows on AMX tiles (kernels/cpu_amx_attention.py) beside the FMA kernel's other rows:
close to float32 attention, generated rows untouched, and a prompt row's bits independent of
its batch and its chunk."""

import pytest
import torch

from radixlm.kernels.cpu_amx_attention import load_cpu_amx_prompt_attention
from radixlm.kernels.cpu_paged_attention import load_cpu_paged_attention
from radixlm.kernels.reference import paged_attention_reference

NUM_SLOTS = 4096
SCALE = 0.125
fma_kernel = load_cpu_paged_attention()
pytestmark = pytest.mark.skipif(
    fma_kernel is None or load_cpu_amx_prompt_attention(torch.bfloat16, 64) is None,
    reason="needs a C++ compiler and a CPU with AMX",
)


def _inputs(heads, kv_heads, head_dim, seq_lens, extend_lens):
    generator = torch.Generator().manual_seed(0)
    k_buffer = torch.randn(NUM_SLOTS, kv_heads, head_dim, generator=generator).bfloat16()
    v_buffer = torch.randn(NUM_SLOTS, kv_heads, head_dim, generator=generator).bfloat16()
    # Scattered slots, as a pool holds them after evictions, except one run of consecutive
    # ones (the kernel reads those in place).
    slots = torch.stack(
        [torch.randperm(NUM_SLOTS, generator=generator)[: max(seq_lens)] for _ in seq_lens]
    )
    slots[0] = torch.arange(max(seq_lens))
    q = torch.randn(sum(extend_lens), heads, head_dim, generator=generator)
    return q, k_buffer, v_buffer, slots


def _attend(q, k_buffer, v_buffer, slots, seq_lens, extend_lens, prompt_rows):
    """Both kernels, as the attention backend runs them."""
    lens, news = torch.tensor(seq_lens), torch.tensor(extend_lens)
    prompt = torch.tensor(prompt_rows)
    out = fma_kernel(q, k_buffer, v_buffer, slots, lens, news, prompt, SCALE)
    prompt_kernel = load_cpu_amx_prompt_attention(torch.bfloat16, q.shape[-1])
    prompt_kernel(q, k_buffer, v_buffer, slots, lens, news, prompt, out, SCALE)
    return out


def _rows(extend_lens, ranges):
    """Flat token rows of each sequence's new tokens [begin, end)."""
    starts = torch.tensor([0, *extend_lens]).cumsum(0)
    return torch.cat([starts[b] + torch.arange(*r) for b, r in enumerate(ranges)])


@pytest.mark.parametrize(
    ("heads", "kv_heads", "head_dim"),
    [(9, 3, 64), (8, 8, 128), (28, 4, 64), (6, 1, 32), (32, 1, 64)],  # last: 32 heads per KV
)
def test_prompt_rows_close_to_float32_and_generated_rows_unchanged(heads, kv_heads, head_dim):
    # A whole prompt, a chunk after a cached prefix, a decode row, a chunk that is prompt up to
    # its 5th token (a retracted request's prompt and generated tokens), and a prompt's last
    # token alone after a cache hit.
    seq_lens, extend_lens, prompt_rows = (
        [300, 90, 130, 41, 700],
        [300, 20, 1, 12, 1],
        [300, 20, 0, 5, 1],
    )
    q, k_buffer, v_buffer, slots = _inputs(heads, kv_heads, head_dim, seq_lens, extend_lens)
    out = _attend(q, k_buffer, v_buffer, slots, seq_lens, extend_lens, prompt_rows)
    expected = paged_attention_reference(
        q, k_buffer.float(), v_buffer.float(), slots, list(range(len(seq_lens))), seq_lens,
        extend_lens, SCALE,
    )  # fmt: skip
    prompt = _rows(extend_lens, [(0, p) for p in prompt_rows])
    # Queries and probabilities rounded to bfloat16: ~4e-3 off a float32 product.
    torch.testing.assert_close(out[prompt], expected[prompt], atol=2e-2, rtol=2e-2)
    generated = _rows(extend_lens, [(p, e) for p, e in zip(prompt_rows, extend_lens, strict=True)])
    fma_only = fma_kernel(
        q,
        k_buffer,
        v_buffer,
        slots,
        torch.tensor(seq_lens),
        torch.tensor(extend_lens),
        torch.zeros(len(seq_lens), dtype=torch.int64),
        SCALE,
    )
    assert torch.equal(out[generated], fma_only[generated])


def test_a_prompt_row_gets_the_same_bits_alone_batched_and_in_any_chunk():
    heads, kv_heads, head_dim = 9, 3, 64
    seq_lens, extend_lens = [300, 77, 640], [300, 20, 64]
    q, k_buffer, v_buffer, slots = _inputs(heads, kv_heads, head_dim, seq_lens, extend_lens)
    batched = _attend(q, k_buffer, v_buffer, slots, seq_lens, extend_lens, extend_lens)
    first = 0
    for b, (seq_len, num_new) in enumerate(zip(seq_lens, extend_lens, strict=True)):
        rows = slice(first, first + num_new)
        alone = _attend(
            q[rows], k_buffer, v_buffer, slots[b : b + 1], [seq_len], [num_new], [num_new]
        )
        assert torch.equal(alone, batched[rows])
        # The same tokens in two chunks split at an odd point (chunked prefill).
        cut = num_new // 3 + 1
        head = _attend(q[first : first + cut], k_buffer, v_buffer, slots[b : b + 1],
                       [seq_len - num_new + cut], [cut], [cut])  # fmt: skip
        tail = _attend(q[first + cut : first + num_new], k_buffer, v_buffer, slots[b : b + 1],
                       [seq_len], [num_new - cut], [num_new - cut])  # fmt: skip
        assert torch.equal(torch.cat([head, tail]), batched[rows])
        first += num_new
