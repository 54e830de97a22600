"""Weights packed once for CPU matmuls.

float32: our AVX2 kernel (kernels/cpu_dense_matmul.py) where it builds: 1.2-1.6x oneDNN's
packed GEMM on 32-row decode batches of an AVX2 CPU, 1.05-1.2x on prefill passes, and a row's
result does not depend on its batch. Without a compiler, oneDNN's packed layout, which is still
2-4x ``F.linear`` on plain weights (that re-packs the weight on every call).

bfloat16: oneDNN's packed layout, on CPUs that multiply bfloat16 matrices on AMX tiles
(``native_bf16_matmul``), where it is several times any float32 GEMM. Inputs of another dtype
are rounded to bfloat16 and the output comes back in their dtype.
"""

from __future__ import annotations

import functools

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
    """A (out_features, in_features) float32 weight in the layout its CPU matmul reads."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.out_features = weight.shape[0]
        self._kernels = load_cpu_dense_matmul()
        if self._kernels is not None:
            self.packed = pack_dense_weight(weight)
        else:
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().float(), None)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T`` (float32, any leading dims)."""
        if self._kernels is None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        out = self._kernels.dense_matmul(rows, self.packed, self.out_features)
        return out.view(*x.shape[:-1], self.out_features)

    def nbytes(self) -> int:
        return self.packed.numel() * self.packed.element_size()


class Bf16CpuWeight:
    """A (out_features, in_features) weight as bfloat16 in oneDNN's packed layout."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.out_features = weight.shape[0]
        self.packed = torch.ops.mkldnn._reorder_linear_weight(
            weight.detach().to(torch.bfloat16), None
        )

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T`` (any float dtype, any leading dims), in ``x``'s dtype."""
        out = torch.ops.mkldnn._linear_pointwise(
            x.to(torch.bfloat16), self.packed, None, "none", [], ""
        )
        return out.to(x.dtype)

    def nbytes(self) -> int:
        return self.packed.numel() * self.packed.element_size()


def pack_cpu_weight(weight: torch.Tensor) -> DenseCpuWeight | Bf16CpuWeight:
    """The packed copy for the weight's dtype (float32 or bfloat16)."""
    return Bf16CpuWeight(weight) if weight.dtype == torch.bfloat16 else DenseCpuWeight(weight)
