"""Triton rotary embedding ("rotate half" layout) for all heads of a token in one program.

Takes the per-token ``cos`` / ``sin_signed`` rows the model already gathered (see
``runtime/layers/rotary.py``). Reference: ``kernels.reference.rotary_reference``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from radixlm.kernels.pdl import pdl_options, start_after_previous


@triton.jit
def _rotary_kernel(
    X,  # (num_tokens, num_heads, head_dim), any strides on the first two dims
    Cos,  # (num_tokens, 1, head_dim): cos, repeated over both halves
    Sin,  # (num_tokens, 1, head_dim): -sin on the first half, +sin on the second
    Out,  # (num_tokens, num_heads, head_dim) contiguous
    stride_xt,
    stride_xh,
    stride_ct,
    stride_st,
    num_heads,
    HALF: tl.constexpr,  # head_dim // 2
    BLOCK_H: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
    PDL: tl.constexpr,
):
    start_after_previous(PDL)
    token = tl.program_id(0)
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_HALF)
    mask = (offs_h < num_heads)[:, None] & (offs_d < HALF)[None, :]
    base = X + token * stride_xt + offs_h[:, None] * stride_xh + offs_d[None, :]
    x1 = tl.load(base, mask=mask, other=0.0).to(tl.float32)  # (BLOCK_H, HALF)
    x2 = tl.load(base + HALF, mask=mask, other=0.0).to(tl.float32)
    cos1 = tl.load(Cos + token * stride_ct + offs_d, mask=offs_d < HALF, other=0.0).to(tl.float32)
    cos2 = tl.load(Cos + token * stride_ct + HALF + offs_d, mask=offs_d < HALF, other=0.0).to(
        tl.float32
    )
    sin1 = tl.load(Sin + token * stride_st + offs_d, mask=offs_d < HALF, other=0.0).to(tl.float32)
    sin2 = tl.load(Sin + token * stride_st + HALF + offs_d, mask=offs_d < HALF, other=0.0).to(
        tl.float32
    )
    out1 = x1 * cos1[None, :] + x2 * sin1[None, :]
    out2 = x2 * cos2[None, :] + x1 * sin2[None, :]
    dst = Out + (token * num_heads + offs_h[:, None]) * (2 * HALF) + offs_d[None, :]
    tl.store(dst, out1.to(Out.dtype.element_ty), mask=mask)
    tl.store(dst + HALF, out2.to(Out.dtype.element_ty), mask=mask)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """x: (num_tokens, num_heads, head_dim) -> rotated contiguous copy, same shape."""
    num_tokens, num_heads, head_dim = x.shape
    assert x.stride(2) == 1 and head_dim % 2 == 0
    cos, sin_signed = cos.reshape(num_tokens, head_dim), sin_signed.reshape(num_tokens, head_dim)
    out = torch.empty((num_tokens, num_heads, head_dim), dtype=x.dtype, device=x.device)
    half = head_dim // 2
    block_half = triton.next_power_of_2(half)
    block_h = min(triton.next_power_of_2(num_heads), max(1, 4096 // block_half))
    grid = (num_tokens, triton.cdiv(num_heads, block_h))
    _rotary_kernel[grid](
        x,
        cos,
        sin_signed,
        out,
        x.stride(0),
        x.stride(1),
        cos.stride(0),
        sin_signed.stride(0),
        num_heads,
        HALF=half,
        BLOCK_H=block_h,
        BLOCK_HALF=block_half,
        num_warps=4,
        **pdl_options(x.device),
    )
    return out
