"""Triton gather of FlashInfer's ``kv_indices`` (every sequence's KV slots, concatenated).

Runs on the device from ``req_to_token`` and ``seq_lens``, so building a batch's page table
never copies slot lists through the host, and it can run before a CUDA graph replay with the
lengths already in device memory. Reference: ``kernels.reference.gather_kv_indices_reference``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _gather_kv_indices_kernel(
    Req_To_Token,  # (max_reqs, max_context_len) int64
    Req_Pool_Indices,  # (batch,)
    Seq_Lens,  # (batch,)
    Kv_Indices,  # (>= sum(Seq_Lens),) int32 output
    stride_req,
    batch,
    BLOCK_BATCH: tl.constexpr,  # batch rounded up to a power of two
    BLOCK: tl.constexpr,
):
    seq = tl.program_id(0)
    # This sequence's offset: the lengths of the sequences before it (batch is small).
    offs_b = tl.arange(0, BLOCK_BATCH)
    before = tl.load(Seq_Lens + offs_b, mask=(offs_b < seq) & (offs_b < batch), other=0)
    start = tl.sum(before, 0)
    req_row = tl.load(Req_Pool_Indices + seq)
    seq_len = tl.load(Seq_Lens + seq)
    for offset in range(0, seq_len, BLOCK):
        offs = offset + tl.arange(0, BLOCK)
        mask = offs < seq_len
        slots = tl.load(Req_To_Token + req_row * stride_req + offs, mask=mask)
        tl.store(Kv_Indices + start + offs, slots.to(tl.int32), mask=mask)


def gather_kv_indices(
    req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor,  # (batch,)
    seq_lens: torch.Tensor,  # (batch,)
    kv_indices: torch.Tensor,  # (>= sum(seq_lens),) int32, written in place
) -> None:
    batch = len(req_pool_indices)
    assert req_pool_indices.is_contiguous() and seq_lens.is_contiguous()
    _gather_kv_indices_kernel[(batch,)](
        req_to_token,
        req_pool_indices,
        seq_lens,
        kv_indices,
        req_to_token.stride(0),
        batch,
        BLOCK_BATCH=triton.next_power_of_2(batch),
        BLOCK=512,
        num_warps=4,
    )
