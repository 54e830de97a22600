"""Triton paged extend (prefill) attention over the token-granular KV pool.

Each sequence brings ``extend_len`` new tokens after a cached prefix (from the radix cache or
an earlier chunk). Their K/V are already stored in the pool, so one kernel reads every key of
the sequence through ``req_to_token`` and applies the causal mask with the prefix offset:
the new token at absolute position ``p`` sees keys ``0..p``. Reference:
``kernels.reference.paged_attention_reference``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _extend_attention_kernel(
    Q,  # (num_tokens, num_heads, head_dim), any strides on the first two dims
    K_Buffer,  # (num_slots, num_kv_heads, head_dim) K of every cached token, by KV slot
    V_Buffer,  # (num_slots, num_kv_heads, head_dim)
    Out,  # (num_tokens, num_heads, head_dim)
    Req_To_Token,  # (max_reqs, max_context_len) int64: position -> KV slot
    Req_Pool_Indices,  # (batch,) row of Req_To_Token of each sequence
    Seq_Lens,  # (batch,) prefix + new tokens
    Extend_Lens,  # (batch,) new tokens
    Extend_Starts,  # (batch,) first row of each sequence in Q / Out
    scaling,
    stride_qt,
    stride_qh,
    stride_kbs,
    stride_kbh,
    stride_vbs,
    stride_vbh,
    stride_ot,
    stride_oh,
    stride_req,
    GROUP: tl.constexpr,  # query heads per kv head
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,  # HEAD_DIM rounded up to a power of two
    BLOCK_M: tl.constexpr,  # new tokens per program
    BLOCK_N: tl.constexpr,  # keys per loop step
    DOT_PRECISION: tl.constexpr,  # "ieee" for float32 inputs: exact enough to compare with HF
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    m_block = tl.program_id(2)
    extend_len = tl.load(Extend_Lens + seq)
    if m_block * BLOCK_M >= extend_len:
        return
    seq_len = tl.load(Seq_Lens + seq)
    prefix_len = seq_len - extend_len
    q_start = tl.load(Extend_Starts + seq)
    req_row = tl.load(Req_Pool_Indices + seq)
    kv_head = head // GROUP

    offs_m = m_block * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < extend_len
    mask_d = offs_d < HEAD_DIM
    q_ptrs = Q + (q_start + offs_m)[:, None] * stride_qt + head * stride_qh + offs_d[None, :]
    q = tl.load(q_ptrs, mask=mask_m[:, None] & mask_d[None, :], other=0.0)  # (BLOCK_M, BLOCK_D)
    q_pos = prefix_len + offs_m

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    # Keys past the block's last query are all masked: stop there.
    kv_end = tl.minimum(seq_len, prefix_len + (m_block + 1) * BLOCK_M)
    for n_start in range(0, kv_end, BLOCK_N):
        offs_n = n_start + tl.arange(0, BLOCK_N)
        mask_n = offs_n < kv_end
        slots = tl.load(Req_To_Token + req_row * stride_req + offs_n, mask=mask_n, other=0)
        k_ptrs = K_Buffer + slots[None, :] * stride_kbs + kv_head * stride_kbh + offs_d[:, None]
        k = tl.load(k_ptrs, mask=mask_n[None, :] & mask_d[:, None], other=0.0)  # (D, N)
        qk = tl.dot(q, k, input_precision=DOT_PRECISION) * scaling  # (BLOCK_M, BLOCK_N)
        visible = (offs_n[None, :] <= q_pos[:, None]) & mask_n[None, :]
        qk = tl.where(visible, qk, float("-inf"))
        # Key 0 is visible to every row in the first step, so m_new is finite from then on.
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v_ptrs = V_Buffer + slots[:, None] * stride_vbs + kv_head * stride_vbh + offs_d[None, :]
        v = tl.load(v_ptrs, mask=mask_n[:, None] & mask_d[None, :], other=0.0)  # (N, D)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    out = acc / l_i[:, None]
    o_ptrs = Out + (q_start + offs_m)[:, None] * stride_ot + head * stride_oh + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])


def extend_attention(
    q: torch.Tensor,  # (num_tokens, num_heads, head_dim)
    k_buffer: torch.Tensor,  # (num_slots, num_kv_heads, head_dim)
    v_buffer: torch.Tensor,
    req_to_token: torch.Tensor,  # (max_reqs, max_context_len)
    req_pool_indices: torch.Tensor,  # (batch,)
    seq_lens: torch.Tensor,  # (batch,)
    extend_lens: torch.Tensor,  # (batch,)
    extend_starts: torch.Tensor,  # (batch,) exclusive prefix sum of extend_lens
    max_extend_len: int,
    scaling: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal paged attention of the new tokens; returns (num_tokens, num_heads, head_dim)."""
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads = k_buffer.shape[1]
    assert num_heads % num_kv_heads == 0 and q.stride(2) == 1 and k_buffer.stride(2) == 1
    assert all(t.is_contiguous() for t in (req_pool_indices, seq_lens, extend_lens, extend_starts))
    if out is None:
        out = torch.empty((num_tokens, num_heads, head_dim), dtype=q.dtype, device=q.device)
    block_m, block_n = (64, 64) if head_dim <= 128 else (32, 32)
    grid = (len(req_pool_indices), num_heads, triton.cdiv(max_extend_len, block_m))
    _extend_attention_kernel[grid](
        q,
        k_buffer,
        v_buffer,
        out,
        req_to_token,
        req_pool_indices,
        seq_lens,
        extend_lens,
        extend_starts,
        scaling,
        q.stride(0),
        q.stride(1),
        k_buffer.stride(0),
        k_buffer.stride(1),
        v_buffer.stride(0),
        v_buffer.stride(1),
        out.stride(0),
        out.stride(1),
        req_to_token.stride(0),
        GROUP=num_heads // num_kv_heads,
        HEAD_DIM=head_dim,
        BLOCK_D=triton.next_power_of_2(head_dim),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        DOT_PRECISION=_dot_precision(q.dtype),
        num_warps=4,
        num_stages=2,
    )
    return out


def _dot_precision(dtype: torch.dtype) -> str:
    # Triton's float32 dot defaults to tf32 (~1e-3 error); float32 runs exist to be exact.
    return "ieee" if dtype == torch.float32 else "tf32"
