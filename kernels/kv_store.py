"""Triton store of the new tokens' K and V into the paged pool, both in one launch.

Reference: ``kernels.reference.store_kv_reference``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from radixlm.kernels.pdl import pdl_options, start_after_previous


@triton.jit
def _store_kv_kernel(
    K,  # (num_tokens, num_kv_heads, head_dim), any strides on the first two dims
    V,  # (num_tokens, num_kv_heads, head_dim)
    K_Buffer,  # (num_slots, num_kv_heads, head_dim) contiguous
    V_Buffer,  # (num_slots, num_kv_heads, head_dim) contiguous
    Loc,  # (num_tokens,) destination KV slot of each token
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    num_kv_heads,
    HEAD_DIM: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PDL: tl.constexpr,
):
    start_after_previous(PDL)
    token = tl.program_id(0)
    slot = tl.load(Loc + token).to(tl.int64)
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_h < num_kv_heads)[:, None] & (offs_d < HEAD_DIM)[None, :]
    k = tl.load(K + token * stride_kt + offs_h[:, None] * stride_kh + offs_d[None, :], mask=mask)
    v = tl.load(V + token * stride_vt + offs_h[:, None] * stride_vh + offs_d[None, :], mask=mask)
    dst = (slot * num_kv_heads + offs_h[:, None]) * HEAD_DIM + offs_d[None, :]
    tl.store(K_Buffer + dst, k.to(K_Buffer.dtype.element_ty), mask=mask)
    tl.store(V_Buffer + dst, v.to(V_Buffer.dtype.element_ty), mask=mask)


def store_kv(
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    loc: torch.Tensor,  # (num_tokens,)
    k: torch.Tensor,  # (num_tokens, num_kv_heads, head_dim)
    v: torch.Tensor,
) -> None:
    num_tokens, num_kv_heads, head_dim = k.shape
    assert k_buffer.is_contiguous() and v_buffer.is_contiguous()
    assert k.stride(2) == 1 and v.stride(2) == 1 and loc.is_contiguous()
    _store_kv_kernel[(num_tokens,)](
        k,
        v,
        k_buffer,
        v_buffer,
        loc,
        k.stride(0),
        k.stride(1),
        v.stride(0),
        v.stride(1),
        num_kv_heads,
        HEAD_DIM=head_dim,
        BLOCK_H=triton.next_power_of_2(num_kv_heads),
        BLOCK_D=triton.next_power_of_2(head_dim),
        num_warps=1,
        **pdl_options(k.device),
    )
