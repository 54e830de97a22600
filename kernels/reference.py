"""Pure-torch references for every kernel in this package.

They define what each kernel computes, are the ground truth of the GPU tests, and run on any
device (slowly). Attention is computed in float32; the elementwise ops round where HF's
modules round, so a kernel that matches them also matches HF transformers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def paged_attention_reference(
    q: torch.Tensor,  # (num_tokens, num_heads, head_dim) new tokens, sequence after sequence
    k_buffer: torch.Tensor,  # (num_slots, num_kv_heads, head_dim)
    v_buffer: torch.Tensor,  # (num_slots, num_kv_heads, head_dim)
    req_to_token: torch.Tensor,  # (max_reqs, max_context_len) -> kv slot
    req_pool_indices: list[int],
    seq_lens: list[int],
    extend_lens: list[int],
    scaling: float,
) -> torch.Tensor:  # (num_tokens, num_heads, head_dim), q's dtype
    """Causal attention of each sequence's new tokens over its whole KV (prefix + new).

    The new tokens' K/V are already in the buffers. Sequence i's new tokens sit at absolute
    positions ``[seq_len - extend_len, seq_len)`` and see keys ``0..position``. Decode is the
    case ``extend_len == 1``.
    """
    num_heads, num_kv_heads = q.shape[1], k_buffer.shape[1]
    group = num_heads // num_kv_heads
    out = torch.empty_like(q)
    start = 0
    for row, seq_len, extend_len in zip(req_pool_indices, seq_lens, extend_lens, strict=True):
        slots = req_to_token[row, :seq_len]
        # (num_heads, seq_len, head_dim): each query head reads its kv head
        k = k_buffer[slots].float().transpose(0, 1).repeat_interleave(group, dim=0)
        v = v_buffer[slots].float().transpose(0, 1).repeat_interleave(group, dim=0)
        qs = q[start : start + extend_len].float().transpose(0, 1)  # (heads, extend, dim)
        scores = qs @ k.transpose(1, 2) * scaling  # (heads, extend, seq_len)
        q_pos = torch.arange(seq_len - extend_len, seq_len, device=q.device)
        k_pos = torch.arange(seq_len, device=q.device)
        scores = scores.masked_fill(k_pos[None, :] > q_pos[:, None], float("-inf"))
        attn = torch.softmax(scores, dim=-1) @ v  # (heads, extend, dim)
        out[start : start + extend_len] = attn.transpose(0, 1).to(q.dtype)
        start += extend_len
    return out


def rmsnorm_reference(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(norm(x + residual), x + residual)``; without a residual, ``(norm(x), None)``.

    Rounds like HF's LlamaRMSNorm: the sum in x's dtype, the normalisation in float32, then
    the cast back before the weight multiply.
    """
    summed = x if residual is None else x + residual
    h = summed.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype), None if residual is None else summed


def rotary_reference(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """x: (num_tokens, num_heads, head_dim), cos/sin_signed: (num_tokens, 1, head_dim).

    "Rotate half" rotary: ``x * cos + [x2, x1] * sin_signed`` where ``sin_signed`` carries
    ``-sin`` on the first half (so the second term is HF's ``rotate_half(x) * sin``).
    """
    half = x.shape[-1] // 2
    swapped = torch.cat((x[..., half:], x[..., :half]), dim=-1)
    return (x.float() * cos.float() + swapped.float() * sin_signed.float()).to(x.dtype)


def silu_and_mul_reference(gate_up: torch.Tensor) -> torch.Tensor:
    """(num_tokens, 2 * d) -> (num_tokens, d): ``silu(gate) * up``, rounded like HF's MLP."""
    half = gate_up.shape[-1] // 2
    return F.silu(gate_up[..., :half]) * gate_up[..., half:]


def store_kv_reference(
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    loc: torch.Tensor,  # (num_tokens,)
    k: torch.Tensor,  # (num_tokens, num_kv_heads, head_dim)
    v: torch.Tensor,
) -> None:
    k_buffer[loc] = k.to(k_buffer.dtype)
    v_buffer[loc] = v.to(v_buffer.dtype)


def gather_kv_indices_reference(
    req_to_token: torch.Tensor, req_pool_indices: list[int], seq_lens: list[int]
) -> torch.Tensor:
    """The KV slots of each sequence, concatenated (FlashInfer's ``kv_indices``), int32."""
    parts = [req_to_token[row, :n] for row, n in zip(req_pool_indices, seq_lens, strict=True)]
    return torch.cat(parts).to(torch.int32)


def linear_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``x W^T + b`` in float32, rounded to x's dtype."""
    out = x.float() @ weight.float().t()
    if bias is not None:
        out = out + bias.float()
    return out.to(x.dtype)


def quantize_activations_reference(x: torch.Tensor) -> torch.Tensor:
    """The float64 values the quantized CPU matmul multiplies for activations ``x`` (rows, K):
    each block of 32 as ``step * (254 * hi + lo)``, hi and lo int8, ``step = absmax / 127 / 254``.
    """
    blocks = x.double().reshape(x.shape[0], -1, 32)
    hi_step = (blocks.abs().amax(dim=-1, keepdim=True) / 127).float().double()  # kernel's float
    safe = torch.where(hi_step > 0, hi_step, torch.ones_like(hi_step))
    hi = torch.where(hi_step > 0, blocks / safe, torch.zeros_like(blocks)).round()
    lo = ((blocks - hi * hi_step) / (safe / 254)).round().clamp(-127, 127)
    return ((254 * hi + lo) * (hi_step / 254)).reshape(x.shape)


def quantized_matmul_reference(x: torch.Tensor, dequantized_weight: torch.Tensor) -> torch.Tensor:
    """What ``q4_1_matmul`` / ``q8_0_matmul`` compute, up to float32 rounding (Q4_1's minimums
    multiply the exact block sums, a difference of the same order)."""
    return quantize_activations_reference(x) @ dequantized_weight.double().T
