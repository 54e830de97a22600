"""Weights packed once for CPU matmuls.

float32: our kernel (kernels/cpu_dense_matmul.py, AVX2 or AVX-512) where it builds: on an AVX2
CPU 1.2-1.6x oneDNN's packed GEMM on 32-row decode batches, 1.05-1.2x on prefill passes; with
AVX-512 1.05-1.4x at 32 rows, 0.92-0.99x at 512; and a row's result does not depend on its
batch. Without a compiler, oneDNN's packed layout, which is still
2-4x ``F.linear`` on plain weights (that re-packs the weight on every call).

bfloat16: oneDNN's packed layout, on CPUs that multiply bfloat16 matrices on AMX tiles
(``native_bf16_matmul``), where it is several times any float32 GEMM. Inputs of another dtype
are rounded to bfloat16 and the output comes back in their dtype.
"""

from __future__ import annotations

import functools
from types import ModuleType

import torch

from radixlm.kernels.cpu_dense_matmul import load_cpu_dense_matmul, pack_dense_weight


@functools.cache
def native_bf16_matmul() -> bool:
    """Whether this CPU multiplies bfloat16 matrices on AMX tiles (Intel Xeon 4th gen and
    later), where oneDNN's bf16 GEMM measured 3-5x any float32 one. AVX512-BF16 alone (AMD Zen
    4, Cooper Lake) is not measured yet and keeps float32."""
    return torch.backends.mkldnn.is_available() and torch.cpu._is_amx_tile_supported()


def dense_cpu_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether linears of this dtype get packed CPU weights (``pack_cpu_weight``)."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return dtype == torch.float32 or (dtype == torch.bfloat16 and native_bf16_matmul())


class DenseCpuWeight:
    """A (out_features, in_features) float32 weight packed for our CPU matmul kernel."""

    def __init__(self, weight: torch.Tensor, kernels: ModuleType) -> None:
        self.out_features = weight.shape[0]
        self._kernels = kernels
        self.packed = pack_dense_weight(weight)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T`` (float32, any leading dims)."""
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        out = self._kernels.dense_matmul(rows, self.packed, self.out_features)
        return out.view(*x.shape[:-1], self.out_features)

    def nbytes(self) -> int:
        return self.packed.numel() * self.packed.element_size()


class OneDnnCpuWeight:
    """A (out_features, in_features) weight in oneDNN's packed layout, in its own dtype."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.dtype = weight.dtype
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T`` (any float dtype, any leading dims): ``x`` rounded to the weight's dtype,
        the result returned in ``x``'s."""
        out = torch.ops.mkldnn._linear_pointwise(
            x.to(self.dtype), self.packed, None, "none", [], ""
        )
        return out.to(x.dtype)

    def nbytes(self) -> int:
        return self.packed.numel() * self.packed.element_size()


CpuWeight = DenseCpuWeight | OneDnnCpuWeight


def pack_cpu_weight(weight: torch.Tensor) -> CpuWeight:
    """The packed copy of a float32 or bfloat16 weight: float32 on our kernel where it builds,
    else (and for bfloat16) on oneDNN."""
    kernels = load_cpu_dense_matmul() if weight.dtype == torch.float32 else None
    return OneDnnCpuWeight(weight) if kernels is None else DenseCpuWeight(weight, kernels)
