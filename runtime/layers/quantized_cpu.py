"""Weight-only quantized linears on CPU, in llama.cpp's block formats: Q4_1 for the layers'
matrices, Q8_0 for the LM head (see kernels/cpu_quant_matmul.py).

A CPU decode step is a weight stream, so reading 0.6 bytes per weight instead of 4 (float32)
is most of the speed there is to gain. Re-packing a GGUF's Q4_1 layers and its Q8_0 tied
embedding from their dequantized float32 weights loses nothing: the blocks come back exactly.
For other float checkpoints it is plain round-to-nearest quantization. Opt in with
``--quantization auto`` (Q4_1 checkpoints) or ``int4`` (any).

Passes of a few rows (decode) run a kernel on the 4-bit blocks; passes of many rows a dense
copy of the same weights (a GEMM is faster there, compute-bound). Three regimes:

- AVX2 CPUs: the kernel writes the activations as int8 blocks (two parts each: about bfloat16
  precision), the copy is float32; a request's logits move by that rounding when its batch
  crosses the row limit.
- CPUs with AVX512-BF16 dot products but no AMX (AMD Zen 4): every pass runs a bfloat16 copy on
  kernels/cpu_bf16_matmul.py (inputs rounded to bfloat16 too; about twice the float32 copy's
  speed), so a row's result never depends on its batch. The block kernel would be faster for
  1-2 rows (decode steps, context 320, Zen 4: 1 row 7.25 vs 10.14 ms, 2 rows 9.57 vs 12.02; 4
  rows 17.23 vs 12.46) but rounds differently: greedy outputs then changed with the batch
  (retraction, concurrency) beyond near-ties.
- CPUs with AMX tiles: the Q4_1 kernel dequantizes each weight tile to bfloat16 as the pass
  reaches it (kernels/cpu_amx_matmul.py), and the copy holds the very same bfloat16 values on
  the same AMX kernel, so both give the same bits and a row's result never depends on its
  batch: batching and jump-forward leave greedy outputs unchanged. The Q8_0 LM head runs its
  bfloat16 copy at every size.

Without a compiler (or AVX2) every pass takes the dense copy.
"""

from __future__ import annotations

from typing import Literal

import torch

from radixlm.kernels.cpu_amx_matmul import (
    amx_supports,
    fuses_silu,
    interleave_gate_up,
    load_cpu_amx_matmul,
    pack_amx_q4_1,
)
from radixlm.kernels.cpu_quant_matmul import (
    BLOCK,
    dequantize_q4_1,
    dequantize_q8_0,
    load_cpu_quant_matmul,
    pack_q4_1,
    pack_q8_0,
)
from radixlm.runtime.layers.dense_cpu import (
    CpuWeight,
    MatmulRoute,
    amx_cpu_weight,
    bf16_dot_cpu_weight,
    native_bf16_matmul,
    pack_cpu_weight,
)

QuantFormat = Literal["q4_1", "q8_0"]
# Passes with more rows than this use the dense copy. Whole decode steps of the default model
# (bench_decode_step.time_decode_steps, context 256-320), kernel vs dense copy: AMD EPYC (AVX2,
# float32 copy on kernels/cpu_dense_matmul.py, interleaved) 2 rows 15.2 vs 27.2 ms, 4 rows 23.6
# vs 26.5, 6 rows 34.4 vs 35.2, 8 rows 40.2 vs 36.0.
KERNEL_MAX_ROWS = 6
# The same on AMX (benchmarks/bench_amx_q4_1.py: the layers' four matmuls x 30, Intel Xeon,
# best of 3): 1 row 7.2 vs 8.7 ms, 8 rows 6.9 vs 8.0, 32 rows 8.9 vs 11.2, 64 rows 16.1 vs
# 15.2 (the kernel dequantizes a tile once per 32 rows).
AMX_KERNEL_MAX_ROWS = 32


def quantized_cpu_supported(device: torch.device, in_features: int) -> bool:
    return (
        device.type == "cpu" and in_features % BLOCK == 0 and torch.backends.mkldnn.is_available()
    )


class QuantizedWeight:
    """A (out_features, in_features) float weight, quantized to blocks once: the blocks for a
    kernel that serves passes of up to ``max_kernel_rows`` rows, and a dense copy of their
    values for the rest."""

    def __init__(
        self, weight: torch.Tensor, quant_format: QuantFormat, gated: bool = False
    ) -> None:
        """``gated``: a fused ``[gate | up]`` weight; where the AMX kernels can, ``matmul``
        then returns silu(gate) * up (``silu_fused``, see dense_cpu.py)."""
        self.blocks: tuple[torch.Tensor, ...] = ()
        self._route: MatmulRoute | None = None  # None: every pass takes the dense copy
        if native_bf16_matmul():
            self._use_amx(weight, quant_format, gated)
            return
        qs, scales, dequantized = _quantize(weight, quant_format)
        self.silu_fused = False
        bf16_copy = bf16_dot_cpu_weight(dequantized)
        if bf16_copy is not None:  # every pass on it: a row's bits never depend on its batch
            self.dense_copy: CpuWeight = bf16_copy
            return
        self.dense_copy = pack_cpu_weight(dequantized)
        kernels = load_cpu_quant_matmul()
        if kernels is not None:
            self.blocks = (qs, scales)
            kernel = kernels.q4_1_matmul if quant_format == "q4_1" else kernels.q8_0_matmul
            self._route = MatmulRoute(KERNEL_MAX_ROWS, kernel, self.blocks, weight.shape[0])

    def _use_amx(self, weight: torch.Tensor, quant_format: QuantFormat, gated: bool) -> None:
        out_features, in_features = weight.shape
        amx = load_cpu_amx_matmul() if amx_supports(in_features) else None
        if amx is None or quant_format != "q4_1":
            dequantized = _quantize(weight, quant_format)[2]
            self.dense_copy = pack_cpu_weight(dequantized.to(torch.bfloat16), gated)
            self.silu_fused = self.dense_copy.silu_fused
            return
        self.silu_fused = gated and fuses_silu(out_features)
        if self.silu_fused:
            weight = interleave_gate_up(weight)  # row order only: the same blocks
        kernel = amx.amx_q4_1_matmul_silu if self.silu_fused else amx.amx_q4_1_matmul
        self.blocks = pack_amx_q4_1(*pack_q4_1(weight))
        self._route = MatmulRoute(AMX_KERNEL_MAX_ROWS, kernel, self.blocks, out_features)
        # The kernel's own dequantization, so that the copy's weights are the kernel's bits.
        tiles = amx.amx_q4_1_to_bf16(*self.blocks)
        self.dense_copy = amx_cpu_weight(tiles, out_features, self.silu_fused)

    @property
    def max_kernel_rows(self) -> int:
        """Passes of up to this many rows take the block kernel (0: no kernel)."""
        return 0 if self._route is None else self._route.max_rows or 0

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T`` (2-D, float32); silu(gate) * up of it if ``silu_fused``."""
        if self._route is not None and self._route.takes(x.shape[0]):
            return self._route.run(x.contiguous())
        return self.dense_copy.matmul(x)

    def routes(self) -> list[MatmulRoute] | None:
        """As ``KernelCpuWeight.routes``: the block kernel's, then the dense copy's."""
        dense = self.dense_copy.routes()
        if self._route is None or dense is None:
            return dense
        return [self._route, *dense]

    def nbytes(self) -> int:
        """Bytes a decode step of one row reads (the blocks, or the dense copy)."""
        if not self.blocks:
            return self.dense_copy.nbytes()
        return sum(part.nbytes for part in self.blocks)


def _quantize(
    weight: torch.Tensor, quant_format: QuantFormat
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(blocks' quants, their scales, the float32 weight they hold)."""
    if quant_format == "q4_1":
        qs, scales = pack_q4_1(weight)
        return qs, scales, dequantize_q4_1(qs, scales)
    qs, scales = pack_q8_0(weight)
    return qs, scales, dequantize_q8_0(qs, scales)
