"""Rotary position embedding (HF Llama "rotate half" layout) with optional frequency scaling."""

from __future__ import annotations

import math

import torch
from torch import nn

from radixlm.kernels.cpu_layer_ops import cpu_layer_ops_for
from radixlm.runtime.model_config import RopeScaling


def rope_inv_freq(head_dim: int, theta: float, scaling: RopeScaling | None) -> torch.Tensor:
    """Per-pair inverse frequencies, float32, (head_dim // 2,)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float32) / head_dim
    inv_freq = 1.0 / (theta**exponents)
    if scaling is None:
        return inv_freq
    if scaling.rope_type == "linear":
        return inv_freq / scaling.factor
    # llama3: keep high frequencies, divide low ones by `factor`, blend smoothly in between.
    old_len = scaling.original_max_position_embeddings
    low_freq_wavelen = old_len / scaling.low_freq_factor
    high_freq_wavelen = old_len / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (old_len / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """Holds cos/sin for every position up to ``max_positions``, in the default dtype."""

    def __init__(
        self, head_dim: int, max_positions: int, theta: float, scaling: RopeScaling | None
    ) -> None:
        super().__init__()
        inv_freq = rope_inv_freq(head_dim, theta, scaling)
        freqs = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
        # (max_positions, head_dim): cos repeated over both halves; sin with the first half
        # negated, so rotation is x * cos + swap_halves(x) * sin_signed (see apply_rotary).
        cos = torch.cat((freqs.cos(), freqs.cos()), dim=-1)
        sin_signed = torch.cat((-freqs.sin(), freqs.sin()), dim=-1)
        dtype = torch.get_default_dtype()
        self.register_buffer("cos", cos.to(dtype), persistent=False)
        self.register_buffer("sin_signed", sin_signed.to(dtype), persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin_signed for the batch's tokens, each (num_tokens, 1, head_dim)."""
        cos = self.cos.index_select(0, positions).unsqueeze(1)
        return cos, self.sin_signed.index_select(0, positions).unsqueeze(1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """x: (num_tokens, num_heads, head_dim) -> rotated copy, same shape.

    Equals HF's ``x * cos + rotate_half(x) * sin`` with rotate_half(x) = [-x2, x1].
    """
    if x.is_cuda:
        # Imported here: kernels/ needs triton, which CPU installs do not have.
        from radixlm.kernels.rotary import apply_rotary as fused_apply_rotary

        return fused_apply_rotary(x, cos, sin_signed)
    ops = cpu_layer_ops_for(x, cos, sin_signed)
    if ops is not None and x.stride(-1) == 1 and cos.is_contiguous() and sin_signed.is_contiguous():
        return ops.rotary(x, cos, sin_signed)
    half = x.shape[-1] // 2
    swapped = torch.cat((x[..., half:], x[..., :half]), dim=-1)
    return torch.addcmul(x * cos, swapped, sin_signed)
