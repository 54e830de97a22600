"""Float32 weights packed once for CPU matmuls (see kernels/cpu_dense_matmul.py).

Our AVX2 kernel where it builds: 1.2-1.6x oneDNN's packed GEMM on 32-row decode batches,
1.05-1.2x on prefill passes, and a row's result does not depend on its batch. Without a
compiler, oneDNN's packed layout, which is still 2-4x ``F.linear`` on plain weights (that
re-packs the weight on every call).
"""

from __future__ import annotations

import torch

from radixlm.kernels.cpu_dense_matmul import load_cpu_dense_matmul, pack_dense_weight


def dense_cpu_supported(device: torch.device, dtype: torch.dtype) -> bool:
    return device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available()


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
