"""Attention in plain torch over the paged KV pool: the CPU path and the GPU reference.

Decode batches are padded into one gather of every sequence's K/V, shape
(batch, kv_heads, max_len, head_dim), and one ``scaled_dot_product_attention`` call per layer;
the gather indices and the padding mask are built once per batch in ``prepare``. Extend
(prefill) batches attend sequence by sequence, causal over cached prefix + new tokens.

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


@dataclass(frozen=True)
class _DecodePlan:
    kv_index: torch.Tensor  # (batch * max_len,) KV slots, row-major per sequence, padded
    max_len: int
    mask: torch.Tensor | None  # (batch, 1, 1, max_len) True = attend; None when unpadded


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
        self._plan: _DecodePlan | list[_ExtendSeq] = []

    def prepare(self, batch: ForwardBatch) -> None:
        self._out_cache_loc = batch.out_cache_loc
        req_to_token = self.req_to_token_pool.req_to_token
        device = req_to_token.device
        if batch.mode is ForwardMode.DECODE:
            max_len = max(batch.seq_lens_cpu)
            # (batch, max_len): slots past a sequence's end are stale but valid pool indices.
            slots = req_to_token[batch.req_pool_indices, :max_len]
            mask = None
            if min(batch.seq_lens_cpu) != max_len:
                positions = torch.arange(max_len, device=device)
                mask = (positions[None, :] < batch.seq_lens[:, None]).view(-1, 1, 1, max_len)
            self._plan = _DecodePlan(slots.reshape(-1), max_len, mask)
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
        num_tokens, num_heads, head_dim = q.shape
        num_kv_heads = k.shape[1]
        group = num_heads // num_kv_heads
        plan = self._plan
        if isinstance(plan, _DecodePlan):
            # (batch, max_len, kv_heads, head_dim) -> (batch, kv_heads, max_len, head_dim)
            shape = (num_tokens, plan.max_len, num_kv_heads, head_dim)
            keys = k_buffer.index_select(0, plan.kv_index).view(shape)
            values = v_buffer.index_select(0, plan.kv_index).view(shape)
            out = F.scaled_dot_product_attention(
                q.view(num_tokens, num_kv_heads, group, head_dim),
                keys.transpose(1, 2),
                values.transpose(1, 2),
                attn_mask=plan.mask,
                scale=scaling,
            )  # (batch, kv_heads, group, head_dim)
            return out.reshape(num_tokens, num_heads, head_dim)
        outputs = []
        for seq in plan:
            seq_q = q[seq.start : seq.start + seq.num_new].transpose(0, 1)  # (heads, new, dim)
            keys = k_buffer.index_select(0, seq.kv_index)  # (seq_len, kv_heads, dim)
            values = v_buffer.index_select(0, seq.kv_index)
            if group > 1:
                # Explicit copies: SDPA's own enable_gqa path is ~2x slower on CPU.
                keys = keys.repeat_interleave(group, dim=1)  # (seq_len, heads, dim)
                values = values.repeat_interleave(group, dim=1)
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
