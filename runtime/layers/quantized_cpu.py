"""Weight-only quantized linears on CPU, in llama.cpp's block formats: Q4_1 for the layers'
matrices, Q8_0 for the LM head (see kernels/cpu_quant_matmul.py).

A CPU decode step is a weight stream, so reading 0.6 bytes per weight instead of 4 (float32)
is most of the speed there is to gain. Re-packing a GGUF's Q4_1 layers and its Q8_0 tied
embedding from their dequantized float32 weights loses nothing: the blocks come back exactly.
For other float checkpoints it is plain round-to-nearest quantization. Opt in with
``--quantization auto`` (Q4_1 checkpoints) or ``int4`` (any).

Passes of a few rows (decode) run the compiled kernel, which also writes the activations as
int8 blocks (two parts each: about bfloat16 precision). At prefill sizes a GEMM is faster
(compute-bound), so a dense copy of the very same dequantized weights (dense_cpu.py) serves
passes of many rows, in float32; a request's logits move by the activations' rounding when its
batch crosses the row limit. CPUs with AMX tiles multiply a bfloat16 copy faster than the
kernel from two rows on, so there every pass takes that copy. Without a compiler (or AVX2)
every pass takes the dense copy.
"""

from __future__ import annotations

from typing import Literal

import torch

from radixlm.kernels.cpu_quant_matmul import (
    BLOCK,
    dequantize_q4_1,
    dequantize_q8_0,
    load_cpu_quant_matmul,
    pack_q4_1,
    pack_q8_0,
)
from radixlm.runtime.layers.dense_cpu import native_bf16_matmul, pack_cpu_weight

QuantFormat = Literal["q4_1", "q8_0"]
# Passes with more rows than this use the dense copy. Whole decode steps of the default model
# (bench_decode_step.time_decode_steps, context 256-320), kernel vs dense copy: AMD EPYC (AVX2,
# float32 copy on kernels/cpu_dense_matmul.py, interleaved) 2 rows 15.2 vs 27.2 ms, 4 rows 23.6
# vs 26.5, 6 rows 34.4 vs 35.2, 8 rows 40.2 vs 36.0. On CPUs with AMX every pass takes the
# bfloat16 copy on our AMX kernel (Intel Xeon, median of 20 steps: 1 row 13.5 vs 11.5 ms, 2 rows
# 14.7 vs 15.3), so a row's result never depends on its batch: batching and jump-forward leave
# greedy outputs unchanged.
KERNEL_MAX_ROWS = 0 if native_bf16_matmul() else 6


def quantized_cpu_supported(device: torch.device, in_features: int) -> bool:
    return (
        device.type == "cpu" and in_features % BLOCK == 0 and torch.backends.mkldnn.is_available()
    )


class QuantizedWeight:
    """A (out_features, in_features) float weight, quantized to blocks once: the blocks for the
    kernel (passes of few rows) and a dense copy of their values for the rest."""

    def __init__(self, weight: torch.Tensor, quant_format: QuantFormat) -> None:
        self.quant_format = quant_format
        if quant_format == "q4_1":
            qs, scales = pack_q4_1(weight)
            dequantized = dequantize_q4_1(qs, scales)
        else:
            qs, scales = pack_q8_0(weight)
            dequantized = dequantize_q8_0(qs, scales)
        if native_bf16_matmul():
            dequantized = dequantized.to(torch.bfloat16)
        self.dense_copy = pack_cpu_weight(dequantized)
        self._kernels = load_cpu_quant_matmul() if KERNEL_MAX_ROWS else None
        # The blocks themselves only where the kernel reads them.
        self.blocks = (qs, scales) if self._kernels is not None else None

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T`` (2-D, float32)."""
        if self.blocks is not None and x.shape[0] <= KERNEL_MAX_ROWS:
            kernel = self._kernels.q4_1_matmul
            if self.quant_format == "q8_0":
                kernel = self._kernels.q8_0_matmul
            return kernel(x.contiguous(), *self.blocks)
        return self.dense_copy.matmul(x)

    def nbytes(self) -> int:
        """Bytes a decode step of one row reads (the blocks, or the dense copy)."""
        if self.blocks is None:
            return self.dense_copy.nbytes()
        return sum(part.nbytes for part in self.blocks)
