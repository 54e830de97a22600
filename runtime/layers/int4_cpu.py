"""Weight-only int4 linears on CPU: 4-bit weights in groups of 32 with a scale and an offset
per group, multiplied by bfloat16 activations with torch's packed int4 CPU kernel.

A CPU decode step is a weight stream, so reading 0.56 bytes per weight instead of 4 (float32)
is most of the speed there is to gain. The format is GGUF's Q4_1 (``w = d * q + m``, ``q`` in
0..15, blocks of 32 along the input dim), so re-packing a Q4_1 checkpoint loses nothing beyond
the bfloat16 rounding of ``d`` and ``m``: every Q4_1 block holds its minimum (``q = 0``) and its
maximum (``q = 15``), and min/max quantization recovers exactly those ``q``. For other float
checkpoints it is plain round-to-nearest int4 quantization (opt in with ``--quantization int4``).
"""

from __future__ import annotations

import torch

GROUP_SIZE = 32
_COMPUTE_DTYPE = torch.bfloat16  # the kernel's only fast activation dtype on AVX-512 CPUs
_INNER_K_TILES = 8  # packing parameter of torch's int4 CPU layout


def int4_cpu_supported(device: torch.device, in_features: int) -> bool:
    return (
        device.type == "cpu"
        and in_features % GROUP_SIZE == 0
        and hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")
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
        # The kernel dequantizes as (q - 8) * scale + zero, so zero = low + 8 * scale.
        self.scales_and_zeros = (
            torch.stack((scale, low + 8 * scale), dim=-1).transpose(0, 1).contiguous()
        ).to(_COMPUTE_DTYPE)  # (in_features // GROUP_SIZE, out_features, 2)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T`` in the dtype of ``x``."""
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.to(_COMPUTE_DTYPE), self.packed, GROUP_SIZE, self.scales_and_zeros
        )
        return out.to(x.dtype)

    def nbytes(self) -> int:
        return self.packed.nbytes + self.scales_and_zeros.nbytes
