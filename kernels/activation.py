"""Triton SiLU-and-mul: ``silu(gate) * up`` over a fused ``[gate | up]`` row in one pass.

Reference: ``kernels.reference.silu_and_mul_reference``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from radixlm.kernels.pdl import pdl_options, start_after_previous


@triton.jit
def _silu_and_mul_kernel(
    GateUp,  # (num_rows, 2 * d): gate in the first half, up in the second
    Out,  # (num_rows, d)
    stride_in,
    stride_out,
    d,
    BLOCK: tl.constexpr,
    PDL: tl.constexpr,
):
    start_after_previous(PDL)
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < d
    gate = tl.load(GateUp + row * stride_in + offs, mask=mask, other=0.0)
    up = tl.load(GateUp + row * stride_in + d + offs, mask=mask, other=0.0)
    g = gate.to(tl.float32)
    # Round silu(gate) to the input dtype before the multiply, as the two-op HF MLP does.
    act = (g / (1.0 + tl.exp(-g))).to(gate.dtype)
    out = act.to(tl.float32) * up.to(tl.float32)
    tl.store(Out + row * stride_out + offs, out.to(Out.dtype.element_ty), mask=mask)


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """(..., 2 * d) -> (..., d)."""
    width = gate_up.shape[-1]
    d = width // 2
    rows = gate_up.reshape(-1, width)  # (num_rows, 2 * d)
    if rows.stride(1) != 1:
        rows = rows.contiguous()
    num_rows = rows.shape[0]
    out = torch.empty((num_rows, d), dtype=gate_up.dtype, device=gate_up.device)
    block = min(1024, triton.next_power_of_2(d))
    _silu_and_mul_kernel[(num_rows, triton.cdiv(d, block))](
        rows,
        out,
        rows.stride(0),
        out.stride(0),
        d,
        BLOCK=block,
        num_warps=4,
        **pdl_options(gate_up.device),
    )
    return out.view(*gate_up.shape[:-1], d)
