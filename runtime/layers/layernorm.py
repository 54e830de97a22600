"""RMSNorm, optionally fused with the residual add that precedes it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from radixlm.kernels.cpu_layer_ops import cpu_layer_ops_for


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(hidden_size), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            # Imported here: kernels/ needs triton, which CPU installs do not have.
            from radixlm.kernels.rmsnorm import rmsnorm

            return rmsnorm(x, self.weight, self.eps)
        ops = cpu_layer_ops_for(x)
        if ops is not None and x.dim() == 2 and x.is_contiguous():
            return ops.rms_norm(x, self.weight, self.eps)
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)

    def forward_with_residual(
        self, x: torch.Tensor, residual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(norm(x + residual), x + residual)``; the sum is the next residual."""
        if x.is_cuda:
            from radixlm.kernels.rmsnorm import rmsnorm

            return rmsnorm(x, self.weight, self.eps, residual), residual  # one fused pass
        ops = cpu_layer_ops_for(x, residual)
        if ops is not None and x.dim() == 2 and x.is_contiguous() and residual.is_contiguous():
            return ops.add_rms_norm(x, residual, self.weight, self.eps), residual
        residual = residual.add_(x)
        return F.rms_norm(residual, self.weight.shape, self.weight, self.eps), residual
