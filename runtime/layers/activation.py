"""SwiGLU's gate: silu(gate) * up on a fused ``[gate | up]`` projection output."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from radixlm.kernels.cpu_layer_ops import cpu_layer_ops_for


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    # gate_up: (num_tokens, 2 * intermediate) -> (num_tokens, intermediate)
    if gate_up.is_cuda:
        # Imported here: kernels/ needs triton, which CPU installs do not have.
        from radixlm.kernels.activation import silu_and_mul as fused_silu_and_mul

        return fused_silu_and_mul(gate_up)
    ops = cpu_layer_ops_for(gate_up)
    # One pass over the values instead of torch's two (silu, then the product).
    if ops is not None and gate_up.dim() == 2 and gate_up.is_contiguous():
        return ops.silu_and_mul(gate_up)
    half = gate_up.shape[-1] // 2
    return F.silu(gate_up[..., :half]).mul_(gate_up[..., half:])
