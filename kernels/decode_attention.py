"""Triton paged decode attention (flash-decoding: split the keys, then merge the splits).

One new token per sequence. Stage 1 runs one program per (sequence, kv head, split): it loads
the query heads of the kv head's GQA group together, so each K/V row is read once for the
whole group, and writes a partial output with its log-sum-exp. Stage 2 merges the splits.

Nothing here reads a length on the host: ``seq_lens`` stays on the device and the number of
splits depends only on the batch shape, so both stages can be captured in a CUDA graph and
replayed for any lengths. Reference: ``kernels.reference.paged_attention_reference``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from radixlm.kernels.pdl import pdl_options, start_after_previous

MAX_SPLITS = 32


@triton.jit
def _decode_split_kernel(
    Q,  # (batch, num_heads, head_dim), any strides on the first two dims
    K_Buffer,  # (num_slots, num_kv_heads, head_dim)
    V_Buffer,  # (num_slots, num_kv_heads, head_dim)
    Req_To_Token,  # (max_reqs, max_context_len) int64: position -> KV slot
    Req_Pool_Indices,  # (batch,)
    Seq_Lens,  # (batch,) keys per sequence, the new token's included
    Partial_Out,  # (batch, num_heads, NUM_SPLITS, head_dim) float32
    Partial_Lse,  # (batch, num_heads, NUM_SPLITS) float32; -inf for an empty split
    Out,  # (batch, num_heads, head_dim): written here directly when NUM_SPLITS == 1
    scaling,
    stride_qb,
    stride_qh,
    stride_kbs,
    stride_kbh,
    stride_vbs,
    stride_vbh,
    stride_req,
    stride_ob,
    stride_oh,
    GROUP: tl.constexpr,
    BLOCK_H: tl.constexpr,  # GROUP padded to >= 16 rows for tl.dot
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,  # "ieee" for float32 inputs
    PDL: tl.constexpr,
):
    start_after_previous(PDL)
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(Seq_Lens + seq)
    req_row = tl.load(Req_Pool_Indices + seq)
    split_len = tl.cdiv(seq_len, NUM_SPLITS)
    kv_start = split * split_len
    kv_end = tl.minimum(kv_start + split_len, seq_len)

    offs_g = tl.arange(0, BLOCK_H)
    heads = kv_head * GROUP + offs_g
    mask_h = offs_g < GROUP
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    q_ptrs = Q + seq * stride_qb + heads[:, None] * stride_qh + offs_d[None, :]
    q = tl.load(q_ptrs, mask=mask_h[:, None] & mask_d[None, :], other=0.0)  # (BLOCK_H, D)

    m_i = tl.full([BLOCK_H], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], dtype=tl.float32)
    for n_start in range(kv_start, kv_end, BLOCK_N):
        offs_n = n_start + tl.arange(0, BLOCK_N)
        mask_n = offs_n < kv_end
        slots = tl.load(Req_To_Token + req_row * stride_req + offs_n, mask=mask_n, other=0)
        k_ptrs = K_Buffer + slots[None, :] * stride_kbs + kv_head * stride_kbh + offs_d[:, None]
        k = tl.load(k_ptrs, mask=mask_n[None, :] & mask_d[:, None], other=0.0)  # (D, N)
        qk = tl.dot(q, k, input_precision=DOT_PRECISION) * scaling  # (BLOCK_H, BLOCK_N)
        qk = tl.where(mask_n[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))  # finite: every step has a valid key
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v_ptrs = V_Buffer + slots[:, None] * stride_vbs + kv_head * stride_vbh + offs_d[None, :]
        v = tl.load(v_ptrs, mask=mask_n[:, None] & mask_d[None, :], other=0.0)  # (N, D)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    if NUM_SPLITS == 1:
        o_ptrs = Out + seq * stride_ob + heads[:, None] * stride_oh + offs_d[None, :]
        out = acc / l_i[:, None]
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=mask_h[:, None] & mask_d[None, :])
        return
    # An empty split (seq_len < NUM_SPLITS) leaves l_i == 0: it contributes weight zero.
    has_keys = l_i > 0.0
    out = tl.where(has_keys[:, None], acc / tl.where(has_keys, l_i, 1.0)[:, None], 0.0)
    lse = tl.where(has_keys, m_i + tl.log(tl.where(has_keys, l_i, 1.0)), float("-inf"))
    row = (seq * (GROUP * tl.num_programs(1)) + heads) * NUM_SPLITS + split
    tl.store(
        Partial_Out + row[:, None] * HEAD_DIM + offs_d[None, :],
        out,
        mask=mask_h[:, None] & mask_d[None, :],
    )
    tl.store(Partial_Lse + row, lse, mask=mask_h)


@triton.jit
def _decode_merge_kernel(
    Partial_Out,  # (batch, num_heads, NUM_SPLITS, head_dim) float32
    Partial_Lse,  # (batch, num_heads, NUM_SPLITS) float32
    Out,  # (batch, num_heads, head_dim)
    stride_ob,
    stride_oh,
    NUM_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
    PDL: tl.constexpr,
):
    start_after_previous(PDL)
    seq = tl.program_id(0)
    head = tl.program_id(1)
    offs_s = tl.arange(0, NUM_SPLITS)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    base = (seq * NUM_HEADS + head) * NUM_SPLITS
    lse = tl.load(Partial_Lse + base + offs_s)  # (NUM_SPLITS,), split 0 is never empty
    weights = tl.exp(lse - tl.max(lse, 0))
    parts = tl.load(
        Partial_Out + (base + offs_s)[:, None] * HEAD_DIM + offs_d[None, :],
        mask=mask_d[None, :],
        other=0.0,
    )  # (NUM_SPLITS, BLOCK_D)
    out = tl.sum(parts * weights[:, None], 0) / tl.sum(weights, 0)
    tl.store(
        Out + seq * stride_ob + head * stride_oh + offs_d, out.to(Out.dtype.element_ty), mask=mask_d
    )


def decode_num_splits(batch_size: int, num_kv_heads: int, num_sms: int) -> int:
    """Splits per sequence so that stage 1 launches about two programs per SM.

    Depends on the batch shape only (never on lengths), so a captured graph stays valid.
    """
    wanted = max(1, (2 * num_sms) // max(1, batch_size * num_kv_heads))
    return min(MAX_SPLITS, triton.next_power_of_2(wanted))


class DecodeWorkspace:
    """Stage 1's float32 scratch, sized once for the worst batch under ``decode_num_splits``.

    Only batches that split need it, and those are small: at most about ``2 * num_sms``
    programs' worth of rows, whatever the largest batch is.
    """

    def __init__(
        self,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        num_sms: int,
        device: torch.device | str,
    ) -> None:
        self.max_rows = num_heads * max(
            bs * decode_num_splits(bs, num_kv_heads, num_sms) for bs in range(1, 2 * num_sms + 1)
        )
        self.partial_out = torch.empty(
            (self.max_rows * head_dim,), dtype=torch.float32, device=device
        )
        self.partial_lse = torch.empty((self.max_rows,), dtype=torch.float32, device=device)


def decode_attention(
    q: torch.Tensor,  # (batch, num_heads, head_dim)
    k_buffer: torch.Tensor,  # (num_slots, num_kv_heads, head_dim)
    v_buffer: torch.Tensor,
    req_to_token: torch.Tensor,  # (max_reqs, max_context_len)
    req_pool_indices: torch.Tensor,  # (batch,)
    seq_lens: torch.Tensor,  # (batch,)
    scaling: float,
    num_splits: int,
    workspace: DecodeWorkspace,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of each sequence's one new token over its cached keys; (batch, heads, dim)."""
    batch, num_heads, head_dim = q.shape
    num_kv_heads = k_buffer.shape[1]
    group = num_heads // num_kv_heads
    assert num_heads % num_kv_heads == 0 and q.stride(2) == 1 and k_buffer.stride(2) == 1
    assert num_splits in (1, 2, 4, 8, 16, 32)
    assert req_pool_indices.is_contiguous() and seq_lens.is_contiguous()
    assert num_splits == 1 or batch * num_heads * num_splits <= workspace.max_rows
    if out is None:
        out = torch.empty((batch, num_heads, head_dim), dtype=q.dtype, device=q.device)
    partial_out = workspace.partial_out[: batch * num_heads * num_splits * head_dim]
    partial_lse = workspace.partial_lse[: batch * num_heads * num_splits]
    block_d = triton.next_power_of_2(head_dim)
    pdl = pdl_options(q.device)
    _decode_split_kernel[(batch, num_kv_heads, num_splits)](
        q,
        k_buffer,
        v_buffer,
        req_to_token,
        req_pool_indices,
        seq_lens,
        partial_out,
        partial_lse,
        out,
        scaling,
        q.stride(0),
        q.stride(1),
        k_buffer.stride(0),
        k_buffer.stride(1),
        v_buffer.stride(0),
        v_buffer.stride(1),
        req_to_token.stride(0),
        out.stride(0),
        out.stride(1),
        GROUP=group,
        BLOCK_H=max(16, triton.next_power_of_2(group)),
        HEAD_DIM=head_dim,
        BLOCK_D=block_d,
        BLOCK_N=64,
        NUM_SPLITS=num_splits,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=4,
        num_stages=2,
        **pdl,
    )
    if num_splits == 1:
        return out
    _decode_merge_kernel[(batch, num_heads)](
        partial_out,
        partial_lse,
        out,
        out.stride(0),
        out.stride(1),
        NUM_HEADS=num_heads,
        HEAD_DIM=head_dim,
        BLOCK_D=block_d,
        NUM_SPLITS=num_splits,
        num_warps=1,
        **pdl,
    )
    return out
