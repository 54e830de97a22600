"""Attention in plain torch over the paged KV pool: the CPU path and the GPU reference.

Decode batches are padded into one gather of every sequence's K/V, shape
(batch, kv_heads, max_len, head_dim), and one ``scaled_dot_product_attention`` call per layer;
the gather indices and the padding mask are built once per batch in ``prepare``. When lengths
differ a lot (a new short request beside a long one) the batch is split into a few length
groups, so padding never more than doubles the K/V a group reads. Extend (prefill) batches
attend sequence by sequence, causal over cached prefix + new tokens.

GQA in decode without copying K/V: query heads ``kv * group .. kv * group + group - 1`` share
KV head ``kv`` (HF's repeat_kv order), so viewing q as (batch, kv_heads, group, head_dim) lets
the group ride along the query-length axis of a plain multi-head call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from radixlm.runtime.attention.base import AttentionBackend
from radixlm.runtime.forward_batch import ForwardBatch, ForwardMode
from radixlm.runtime.memory_pool import KVCache, ReqToTokenPool

# A decode group's sequences are at least half as long as its longest one; past this many
# groups the last one takes all the rest (each group costs a few extra ops per layer).
_MAX_DECODE_GROUPS = 4


@dataclass(frozen=True)
class _DecodeGroup:
    rows: torch.Tensor | None  # (group_size,) batch rows in this group; None: the whole batch
    kv_index: torch.Tensor  # (group_size * max_len,) KV slots, row-major per sequence, padded
    max_len: int
    mask: torch.Tensor | None  # (group_size, 1, 1, max_len) True = attend; None when unpadded


@dataclass(frozen=True)
class _ExtendSeq:
    start: int  # first row of this sequence in the flattened token dim
    num_new: int
    kv_index: torch.Tensor  # (seq_len,) KV slots of prefix + new tokens
    mask: torch.Tensor | None  # (num_new, seq_len) True = attend; None: no prefix, plain causal


class TorchAttentionBackend(AttentionBackend):
    def __init__(self, kv_cache: KVCache, req_to_token_pool: ReqToTokenPool) -> None:
        super().__init__(kv_cache, req_to_token_pool)
        self._out_cache_loc = torch.empty(0, dtype=torch.int64)
        self._plan: list[_DecodeGroup] | list[_ExtendSeq] = []

    def prepare(self, batch: ForwardBatch) -> None:
        self._out_cache_loc = batch.out_cache_loc
        req_to_token = self.req_to_token_pool.req_to_token
        device = req_to_token.device
        if batch.mode is ForwardMode.DECODE:
            groups = _length_groups(batch.seq_lens_cpu)
            self._plan = [self._decode_group(batch, rows, len(groups) > 1) for rows in groups]
            return
        self._plan = []
        start = 0
        for i, (prefix_len, num_new) in enumerate(
            zip(batch.prefix_lens_cpu, batch.extend_lens_cpu, strict=True)
        ):
            seq_len = prefix_len + num_new
            kv_index = req_to_token[batch.req_pool_indices[i], :seq_len]
            mask = None
            if prefix_len > 0:
                # New token t (absolute position prefix_len + t) sees keys 0..prefix_len + t.
                rows = torch.arange(prefix_len, seq_len, device=device)
                mask = torch.arange(seq_len, device=device)[None, :] <= rows[:, None]
            self._plan.append(_ExtendSeq(start, num_new, kv_index, mask))
            start += num_new

    def _decode_group(self, batch: ForwardBatch, rows: list[int], is_part: bool) -> _DecodeGroup:
        device = self.req_to_token_pool.req_to_token.device
        seq_lens = [batch.seq_lens_cpu[i] for i in rows]
        max_len = max(seq_lens)
        rows_tensor = torch.tensor(rows, dtype=torch.int64, device=device) if is_part else None
        req_pool_indices = batch.req_pool_indices
        group_seq_lens = batch.seq_lens
        if rows_tensor is not None:
            req_pool_indices = req_pool_indices.index_select(0, rows_tensor)
            group_seq_lens = group_seq_lens.index_select(0, rows_tensor)
        # (group, max_len): slots past a sequence's end are stale but valid pool indices.
        slots = self.req_to_token_pool.req_to_token[req_pool_indices, :max_len]
        mask = None
        if min(seq_lens) != max_len:
            positions = torch.arange(max_len, device=device)
            mask = (positions[None, :] < group_seq_lens[:, None]).view(-1, 1, 1, max_len)
        return _DecodeGroup(rows_tensor, slots.reshape(-1), max_len, mask)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        layer_id: int,
        scaling: float,
    ) -> torch.Tensor:
        self.kv_cache.write(layer_id, self._out_cache_loc, k, v)
        k_buffer = self.kv_cache.k_buffer[layer_id]
        v_buffer = self.kv_cache.v_buffer[layer_id]
        plan = self._plan
        if plan and isinstance(plan[0], _DecodeGroup):
            if len(plan) == 1:
                return _decode_attention(plan[0], q, k_buffer, v_buffer, scaling)
            out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
            for group in plan:
                group_q = q.index_select(0, group.rows)
                out.index_copy_(
                    0, group.rows, _decode_attention(group, group_q, k_buffer, v_buffer, scaling)
                )
            return out
        heads_per_kv = q.shape[1] // k.shape[1]
        outputs = []
        for seq in plan:
            seq_q = q[seq.start : seq.start + seq.num_new].transpose(0, 1)  # (heads, new, dim)
            keys = k_buffer.index_select(0, seq.kv_index)  # (seq_len, kv_heads, dim)
            values = v_buffer.index_select(0, seq.kv_index)
            if heads_per_kv > 1:
                # Explicit copies: SDPA's own enable_gqa path is ~2x slower on CPU.
                keys = keys.repeat_interleave(heads_per_kv, dim=1)  # (seq_len, heads, dim)
                values = values.repeat_interleave(heads_per_kv, dim=1)
            out = F.scaled_dot_product_attention(
                seq_q,
                keys.transpose(0, 1),
                values.transpose(0, 1),
                attn_mask=seq.mask,
                is_causal=seq.mask is None,  # no prefix: square causal, no mask to build
                scale=scaling,
            )  # (heads, new, dim)
            outputs.append(out.transpose(0, 1))
        return torch.cat(outputs) if len(outputs) > 1 else outputs[0]


def _length_groups(seq_lens: tuple[int, ...]) -> list[list[int]]:
    """Batch rows grouped by length, longest first; each group's shortest sequence is at least
    half its longest, except the last group once ``_MAX_DECODE_GROUPS`` are open."""
    order = sorted(range(len(seq_lens)), key=lambda i: seq_lens[i], reverse=True)
    groups = [[order[0]]]
    for row in order[1:]:
        if 2 * seq_lens[row] < seq_lens[groups[-1][0]] and len(groups) < _MAX_DECODE_GROUPS:
            groups.append([row])
        else:
            groups[-1].append(row)
    return groups


def _decode_attention(
    group: _DecodeGroup,
    q: torch.Tensor,  # (group_size, heads, dim)
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    scaling: float,
) -> torch.Tensor:  # (group_size, heads, dim)
    group_size, num_heads, head_dim = q.shape
    num_kv_heads = k_buffer.shape[1]
    # (group, max_len, kv_heads, head_dim) -> (group, kv_heads, max_len, head_dim)
    shape = (group_size, group.max_len, num_kv_heads, head_dim)
    keys = k_buffer.index_select(0, group.kv_index).view(shape)
    values = v_buffer.index_select(0, group.kv_index).view(shape)
    out = F.scaled_dot_product_attention(
        q.view(group_size, num_kv_heads, num_heads // num_kv_heads, head_dim),
        keys.transpose(1, 2),
        values.transpose(1, 2),
        attn_mask=group.mask,
        scale=scaling,
    )  # (group, kv_heads, group_heads, head_dim)
    return out.reshape(group_size, num_heads, head_dim)
