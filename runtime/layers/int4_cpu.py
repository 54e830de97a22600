"""Weight-only int4 linears on CPU: 4-bit weights in groups of 32 with a scale and an offset
per group, multiplied by bfloat16 activations with torch's packed int4 CPU kernel.

A CPU decode step is a weight stream, so reading 0.56 bytes per weight instead of 4 (float32)
is most of the speed there is to gain. The format is GGUF's Q4_1 (``w = d * q + m``, ``q`` in
0..15, blocks of 32 along the input dim), so re-packing a Q4_1 checkpoint loses nothing beyond
the bfloat16 rounding of ``d`` and ``m``: every Q4_1 block holds its minimum (``q = 0``) and its
maximum (``q = 15``), and min/max quantization recovers exactly those ``q``. For other float
checkpoints it is plain round-to-nearest int4 quantization. Opt in with ``--quantization auto``
(Q4_1 checkpoints) or ``int4`` (any).

At prefill sizes oneDNN's float32 GEMM is about twice as fast as the int4 kernel (compute-bound),
so a float32 copy of the very same dequantized weights serves passes of many rows, with the rows
rounded to bfloat16 on the way in and out like the kernel does: both paths compute the same
products and differ only in float32 summation order.
"""

from __future__ import annotations

import torch

GROUP_SIZE = 32
# Passes with more rows than this use the float32 copy. The int4 kernel wins while a pass is a
# weight stream; past a few rows oneDNN's float32 GEMM is faster (AMD EPYC, AVX2, 2 cores, whole
# decode steps of the default model: 8 rows 52 vs 64 ms, 16 rows even, 32 rows 176 vs 131 ms).
# Both paths compute the same bf16-rounded products, in a different float32 summation order, so
# a request's logits move by float32 rounding when its batch crosses this size.
INT4_MAX_ROWS = 8
_COMPUTE_DTYPE = torch.bfloat16  # the kernel's only fast activation dtype on AVX-512 CPUs
_INNER_K_TILES = 8  # packing parameter of torch's int4 CPU layout


def int4_cpu_supported(device: torch.device, in_features: int) -> bool:
    return (
        device.type == "cpu"
        and in_features % GROUP_SIZE == 0
        and hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")
        and torch.backends.mkldnn.is_available()
    )


class Int4Weight:
    """A (out_features, in_features) float weight, packed to int4 groups once."""

    def __init__(self, weight: torch.Tensor) -> None:
        out_features, in_features = weight.shape
        groups = weight.detach().float().reshape(out_features, in_features // GROUP_SIZE, -1)
        low = groups.amin(dim=-1)
        scale = ((groups.amax(dim=-1) - low) / 15).clamp(min=torch.finfo(torch.float32).tiny)
        q = ((groups - low[..., None]) / scale[..., None]).round().clamp(0, 15)
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            q.reshape(out_features, in_features).to(torch.int32), _INNER_K_TILES
        )
        # The kernel dequantizes as (q - 8) * scale + zero, so zero = low + 8 * scale; rounding
        # both to bfloat16 separately keeps the error symmetric around q = 8.
        zero = (low + 8 * scale).to(_COMPUTE_DTYPE)
        scale = scale.to(_COMPUTE_DTYPE)
        self.scales_and_zeros = (
            torch.stack((scale, zero), dim=-1).transpose(0, 1).contiguous()
        )  # (in_features // GROUP_SIZE, out_features, 2)
        dequantized = (q - 8) * scale.float()[..., None] + zero.float()[..., None]
        self.float_packed = torch.ops.mkldnn._reorder_linear_weight(
            dequantized.reshape(out_features, in_features), None
        )

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T`` in the dtype of ``x`` (2-D), through bfloat16 inputs and outputs."""
        rows = x.to(_COMPUTE_DTYPE)
        if x.shape[0] <= INT4_MAX_ROWS:
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(
                rows, self.packed, GROUP_SIZE, self.scales_and_zeros
            )
        else:
            out = torch.ops.mkldnn._linear_pointwise(
                rows.float(), self.float_packed, None, "none", [], ""
            ).to(_COMPUTE_DTYPE)
        return out.to(x.dtype)

    def nbytes(self) -> int:
        """Bytes a decode step reads (the int4 copy)."""
        return self.packed.nbytes + self.scales_and_zeros.nbytes
