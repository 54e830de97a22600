"""Triton RMSNorm fused with the residual add before it: one read and one write per tensor.

Reference: ``kernels.reference.rmsnorm_reference`` (rounds where HF's LlamaRMSNorm rounds).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from radixlm.kernels.pdl import pdl_options, start_after_previous


@triton.jit
def _rmsnorm_kernel(
    X,  # (num_rows, hidden) input
    Residual,  # (num_rows, hidden): updated in place to X + Residual when HAS_RESIDUAL
    Weight,  # (hidden,)
    Out,  # (num_rows, hidden)
    stride_x,
    stride_r,
    stride_o,
    hidden,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK: tl.constexpr,  # hidden rounded up to a power of two: one program holds a row
    PDL: tl.constexpr,
):
    start_after_previous(PDL)
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    mask = offs < hidden
    x = tl.load(X + row * stride_x + offs, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        # Round the sum to the model dtype first, as HF's `residual + hidden_states` does.
        r = tl.load(Residual + row * stride_r + offs, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)
        tl.store(Residual + row * stride_r + offs, x, mask=mask)
    h = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(h * h, 0) / hidden + eps)
    normed = (h * rstd).to(x.dtype)
    w = tl.load(Weight + offs, mask=mask, other=0.0)
    out = normed.to(tl.float32) * w.to(tl.float32)
    tl.store(Out + row * stride_o + offs, out.to(Out.dtype.element_ty), mask=mask)


def rmsnorm(
    x: torch.Tensor,  # (..., hidden)
    weight: torch.Tensor,  # (hidden,)
    eps: float,
    residual: torch.Tensor | None = None,  # (num_rows, hidden), updated in place
) -> torch.Tensor:
    """``norm(x + residual)``, shaped like x; when ``residual`` is given it becomes
    ``x + residual``."""
    hidden = x.shape[-1]
    rows = x.reshape(-1, hidden)  # (num_rows, hidden); copies only a strided view (qk-norm)
    if rows.stride(1) != 1:
        rows = rows.contiguous()
    num_rows = rows.shape[0]
    out = torch.empty((num_rows, hidden), dtype=x.dtype, device=x.device)
    block = triton.next_power_of_2(hidden)
    has_residual = residual is not None
    if has_residual:
        assert residual.shape == rows.shape and residual.stride(1) == 1
    _rmsnorm_kernel[(num_rows,)](
        rows,
        residual if has_residual else rows,
        weight,
        out,
        rows.stride(0),
        residual.stride(0) if has_residual else 0,
        out.stride(0),
        hidden,
        eps,
        HAS_RESIDUAL=has_residual,
        BLOCK=block,
        num_warps=min(16, max(1, block // 256)),
        **pdl_options(x.device),
    )
    return out.view(x.shape)
