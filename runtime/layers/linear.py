"""Linear layers that know how they would be sharded across tensor-parallel ranks.

Column-parallel layers split their output rows across ranks, row-parallel ones their input
columns (and sum the partial results). With the default ``tp_size=1`` they are plain linears.
Weights are created uninitialized: the runner loads them or fills them with a dummy init.

On CPU in float32 (and in bfloat16 where the CPU has bfloat16 matrix instructions) the runner
calls ``prepack_for_cpu`` once the weights are final, which packs them for the CPU matmul (see
dense_cpu.py); with int4 quantization it calls
``quantize_for_cpu`` instead (see quantized_cpu.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from radixlm.runtime.layers.dense_cpu import CpuWeight, pack_cpu_weight
from radixlm.runtime.layers.quantized_cpu import QuantFormat, QuantizedWeight


class LinearBase(nn.Module):
    """``y = x W^T + b`` on a plain weight, or on its packed or quantized CPU copy."""

    weight: nn.Parameter | None
    bias: nn.Parameter | None

    def __init__(self) -> None:
        super().__init__()
        self.cpu_weight: CpuWeight | QuantizedWeight | None = None
        # Set by an MLP that uses only silu(gate) * up of this fused [gate | up] projection:
        # the CPU packers may then compute that in the matmul (see ``silu_fused``).
        self.swiglu = False

    @property
    def silu_fused(self) -> bool:
        """Whether ``forward`` returns silu(gate) * up instead of ``[gate | up]``."""
        return self.cpu_weight is not None and self.cpu_weight.silu_fused

    def prepack_for_cpu(self) -> None:
        """Replaces the plain weight by its packed layout (same values, no extra copy kept).

        Irreversible: weights cannot be loaded into this module afterwards.
        """
        assert self.weight is not None and self.weight.device.type == "cpu"
        self.cpu_weight = pack_cpu_weight(self.weight, gated=self._fusable_swiglu())
        self.weight = None  # a tied weight stays alive through the module that owns it

    def quantize_for_cpu(self, quant_format: QuantFormat) -> None:
        """Replaces the plain weight by quantized blocks (irreversible, like
        ``prepack_for_cpu``)."""
        assert self.weight is not None and self.weight.device.type == "cpu"
        self.cpu_weight = QuantizedWeight(self.weight, quant_format, gated=self._fusable_swiglu())
        self.weight = None

    def _fusable_swiglu(self) -> bool:
        return self.swiglu and self.bias is None  # a bias comes before the gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cpu_weight is not None:
            out = self.cpu_weight.matmul(x)
            return out if self.bias is None else out.add_(self.bias)
        if x.is_cuda and x.dim() == 2 and x.shape[0] == 1 and x.dtype != torch.float32:
            # One 16-bit row (batch-1 decode) is a pure weight stream; for most shapes our
            # Triton GEMV reads it 5-24% faster than cuBLAS (benchmarks/bench_gpu_kernels.py).
            # Imported here: kernels/ needs triton, which CPU installs do not have.
            from radixlm.kernels.gemv import gemv, gemv_pays

            if gemv_pays(*self.weight.shape):
                return gemv(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


class ColumnParallelLinear(LinearBase):
    """W's rows (outputs) split across ranks; outputs stay sharded."""

    def __init__(
        self,
        input_size: int,
        output_sizes: list[int],
        bias: bool = False,
        tp_rank: int = 0,
        tp_size: int = 1,
    ) -> None:
        super().__init__()
        assert all(size % tp_size == 0 for size in output_sizes), (output_sizes, tp_size)
        self.tp_rank = tp_rank
        self.tp_size = tp_size
        # Several logical matrices stacked along the output dim (q/k/v, gate/up): one matmul.
        self.shard_sizes = [size // tp_size for size in output_sizes]
        self.shard_offsets = [sum(self.shard_sizes[:i]) for i in range(len(self.shard_sizes))]
        out_size = sum(self.shard_sizes)
        self.weight = nn.Parameter(torch.empty(out_size, input_size), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_size), requires_grad=False) if bias else None

    def load_shard(self, index: int, loaded: torch.Tensor, is_bias: bool = False) -> None:
        """Copies this rank's part of logical matrix ``index`` (full, unsharded) into place."""
        size, offset = self.shard_sizes[index], self.shard_offsets[index]
        target = self.bias if is_bias else self.weight
        assert target is not None
        assert loaded.shape[0] == size * self.tp_size, (loaded.shape, size, self.tp_size)
        target[offset : offset + size].copy_(loaded.narrow(0, self.tp_rank * size, size))


class RowParallelLinear(LinearBase):
    """W's columns (inputs) split across ranks; the partial products are all-reduced."""

    def __init__(
        self, input_size: int, output_size: int, tp_rank: int = 0, tp_size: int = 1
    ) -> None:
        super().__init__()
        assert input_size % tp_size == 0, (input_size, tp_size)
        self.tp_rank = tp_rank
        self.tp_size = tp_size
        self.weight = nn.Parameter(
            torch.empty(output_size, input_size // tp_size), requires_grad=False
        )
        self.bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.tp_size > 1:
            torch.distributed.all_reduce(out)
        return out

    def load_shard(self, loaded: torch.Tensor) -> None:
        assert self.weight is not None
        size = self.weight.shape[1]
        self.weight.copy_(loaded.narrow(1, self.tp_rank * size, size))
