"""Weights packed once for CPU matmuls.

float32: our kernel (kernels/cpu_dense_matmul.py, AVX2 or AVX-512) where it builds: on an AVX2
CPU 1.2-1.6x oneDNN's packed GEMM on 32-row decode batches, 1.05-1.2x on prefill passes; with
AVX-512 1.05-1.4x at 32 rows, 0.92-0.99x at 512; and a row's result does not depend on its
batch. Without a compiler, oneDNN's packed layout, which is still
2-4x ``F.linear`` on plain weights (that re-packs the weight on every call).

bfloat16, on CPUs that multiply bfloat16 matrices on AMX tiles (``native_bf16_matmul``),
where it is several times any float32 GEMM: our AMX kernel (kernels/cpu_amx_matmul.py; 1.4-3.1x
oneDNN at 32 rows, and a row's result does not depend on its batch), else oneDNN's packed
layout. Inputs of another dtype are rounded to bfloat16 and the output comes back in their
dtype.

A fused ``[gate | up]`` weight packed with ``gated=True`` on the AMX kernel computes SwiGLU's
silu(gate) * up in the matmul's epilogue (``silu_fused``): the MLP's hidden activations come
out directly (30 layers' gate/up at 512 rows 81.8 -> 59.3 ms, at 32 rows 8.6 -> 6.1 ms, the
same bits as the separate ``silu_and_mul``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from radixlm.kernels.cpu_amx_matmul import (
    amx_supports,
    fuses_silu,
    interleave_gate_up,
    load_cpu_amx_matmul,
    pack_amx_weight,
)
from radixlm.kernels.cpu_bf16_matmul import load_cpu_bf16_matmul, pack_bf16_dot_weight
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


@dataclass(frozen=True)
class MatmulRoute:
    """One way a CPU weight runs ``x @ W^T``: a compiled ``kernel(rows, *weights, width)``
    (width: the output's) for passes of up to ``max_rows`` rows (None: any number). The
    compiled decoder loop (kernels/cpu_decoder.py) calls these kernels directly."""

    max_rows: int | None
    kernel: Callable[..., torch.Tensor]
    weights: tuple[torch.Tensor, ...]
    width: int

    def takes(self, rows: int) -> bool:
        return self.max_rows is None or rows <= self.max_rows

    def run(self, rows: torch.Tensor) -> torch.Tensor:
        """The kernel on 2-D contiguous ``rows``."""
        return self.kernel(rows, *self.weights, self.width)


class KernelCpuWeight:
    """A (out_features, in_features) weight packed once for one of our CPU matmul kernels:
    ``kernel(rows, packed, kernel_width)``. With ``silu_fused`` the weight is a fused
    ``[gate | up]`` of ``kernel_width`` = 2 * out_features rows and the kernel returns
    silu(gate) * up."""

    def __init__(
        self,
        packed: torch.Tensor,
        out_features: int,
        kernel: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
        silu_fused: bool = False,
    ) -> None:
        self.packed = packed
        self.out_features = out_features
        self.silu_fused = silu_fused
        width = 2 * out_features if silu_fused else out_features
        self._route = MatmulRoute(None, kernel, (packed,), width)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T`` (any leading dims), in ``x``'s dtype."""
        out = self._route.run(x.reshape(-1, x.shape[-1]).contiguous())
        return out.view(*x.shape[:-1], self.out_features)

    def routes(self) -> list[MatmulRoute] | None:
        """The ways a pass may run, the first that takes its rows winning (here one, any rows);
        None where a way is not one of our compiled kernels (``OneDnnCpuWeight``)."""
        return [self._route]

    def nbytes(self) -> int:
        return self.packed.numel() * self.packed.element_size()


class OneDnnCpuWeight:
    """A (out_features, in_features) weight in oneDNN's packed layout, in its own dtype."""

    silu_fused = False

    def __init__(self, weight: torch.Tensor) -> None:
        self.dtype = weight.dtype
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)

    def routes(self) -> None:
        return None  # oneDNN's, not ours

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T`` (any float dtype, any leading dims): ``x`` rounded to the weight's dtype,
        the result returned in ``x``'s."""
        out = torch.ops.mkldnn._linear_pointwise(
            x.to(self.dtype), self.packed, None, "none", [], ""
        )
        return out.to(x.dtype)

    def nbytes(self) -> int:
        return self.packed.numel() * self.packed.element_size()


CpuWeight = KernelCpuWeight | OneDnnCpuWeight


def pack_cpu_weight(weight: torch.Tensor, gated: bool = False) -> CpuWeight:
    """The packed copy of a float32 or bfloat16 weight, on our kernel for its dtype where it
    builds (and, for AMX, takes the weight's input width), else on oneDNN. ``gated``: the
    weight is a fused ``[gate | up]``; where the kernel can, it then returns silu(gate) * up
    (``silu_fused``)."""
    out_features = weight.shape[0]
    if weight.dtype == torch.float32:
        dense = load_cpu_dense_matmul()
        if dense is not None:
            return KernelCpuWeight(pack_dense_weight(weight), out_features, dense.dense_matmul)
    elif amx_supports(weight.shape[1]) and load_cpu_amx_matmul() is not None:
        silu_fused = gated and fuses_silu(out_features)
        if silu_fused:
            weight = interleave_gate_up(weight)
        return amx_cpu_weight(pack_amx_weight(weight), out_features, silu_fused)
    return OneDnnCpuWeight(weight)


def bf16_dot_cpu_weight(weight: torch.Tensor) -> KernelCpuWeight | None:
    """The weight rounded to bfloat16 on the AVX512-BF16 dot-product kernel (float32 inputs
    rounded to bfloat16, float32 sums), or None where that kernel does not build."""
    kernels = load_cpu_bf16_matmul()
    if kernels is None or weight.shape[1] % 2:
        return None
    return KernelCpuWeight(pack_bf16_dot_weight(weight), weight.shape[0], kernels.bf16_dot_matmul)


def amx_cpu_weight(tiles: torch.Tensor, out_features: int, silu_fused: bool) -> KernelCpuWeight:
    """AMX bfloat16 weight tiles (``pack_amx_weight``'s layout) of ``out_features`` outputs on
    our AMX kernel; ``silu_fused``: the tiles hold an interleaved ``[gate | up]``
    (``interleave_gate_up``) and the kernel returns silu(gate) * up, out_features / 2 wide."""
    amx = load_cpu_amx_matmul()
    assert amx is not None, "callers check that the AMX kernel builds"
    if silu_fused:
        return KernelCpuWeight(tiles, out_features // 2, amx.amx_matmul_silu, silu_fused=True)
    return KernelCpuWeight(tiles, out_features, amx.amx_matmul)
