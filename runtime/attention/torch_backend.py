"""Attention in plain torch over the paged KV pool: the CPU path and the GPU reference.

Decode batches are padded into one gather of every sequence's K/V, shape
(batch, kv_heads, max_len, head_dim), and one ``scaled_dot_product_attention`` call per layer;
the gather indices and the padding mask are built once per batch in ``prepare``. When lengths
differ a lot (a new short request beside a long one) the batch is split into a few length
groups, so padding never more than doubles the K/V a group reads. In extend batches (a decode
pass that carries jump-forwarded tokens, or a prefill), one-token rows take that same decode
path; other short extends (at most ``_MAX_BATCHED_EXTEND`` new tokens) are grouped by their
number of new tokens (again at most doubling) and padded to one query block per group with a
causal mask over prefix + new tokens; long extends (prompt chunks) attend sequence by sequence.
So forced tokens cost a few gathers and SDPA calls per layer, not one per sequence.

On CPU, every batch (decode, prefill chunks, and any mix) goes to one call per layer of a
compiled kernel (kernels/cpu_paged_attention.py) that reads each sequence's K/V where it lies in
the pool, instead of the gathers + SDPA: one pass over the K/V bytes instead of three, no
padding, and per-row arithmetic that depends neither on the batch nor on how a token arrives
(decode row or prefill chunk). Over a bfloat16 pool on a CPU with AMX, prompt tokens go to a
second kernel on tiles (kernels/cpu_amx_attention.py; ``ForwardBatch.prompt_rows_cpu`` says
which), generated tokens to the first in any case. Without a compiler the gather path below
runs.

GQA in decode without copying K/V: query heads ``kv * group .. kv * group + group - 1`` share
KV head ``kv`` (HF's repeat_kv order), so viewing q as (batch, kv_heads, group, head_dim) lets
the group ride along the query-length axis of a plain multi-head call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from radixlm.kernels.cpu_amx_attention import (
    CpuAmxPromptAttention,
    load_cpu_amx_prompt_attention,
)
from radixlm.kernels.cpu_paged_attention import (
    CpuPagedAttention,
    load_cpu_paged_attention,
    supports_head_dim,
)
from radixlm.runtime.attention.base import AttentionBackend
from radixlm.runtime.forward_batch import ForwardBatch, ForwardMode
from radixlm.runtime.memory_pool import KVCache, ReqToTokenPool

# A decode group's sequences are at least half as long as its longest one; past this many
# groups the last one takes all the rest (each group costs a few extra ops per layer).
_MAX_DECODE_GROUPS = 4
# Extends up to this many new tokens are padded into groups; longer ones attend one by one
# (padding every query of a group to a prompt chunk's length would waste the attention).
_MAX_BATCHED_EXTEND = 32


@dataclass(frozen=True)
class _KernelBatch:
    """The compiled CPU kernel's view of a batch (see kernels/cpu_paged_attention.py)."""

    slots: torch.Tensor  # (batch, max_len) KV slots per sequence
    seq_lens: torch.Tensor  # (batch,)
    extend_lens: torch.Tensor  # (batch,) new tokens per sequence
    # (batch,) leading new tokens that are prompt tokens, for the prompt kernel (zeros: none)
    prompt_rows: torch.Tensor
    has_prompt_rows: bool  # False in decode passes: the prompt kernel is not called


@dataclass(frozen=True)
class _DecodeGroup:
    # (group_size,) rows of q (= batch rows in decode, token rows in extend) of this group;
    # None: the whole batch
    rows: torch.Tensor | None
    slots: torch.Tensor  # (group_size, max_len) KV slots per sequence, padded with stale ones
    seq_lens: torch.Tensor  # (group_size,)
    max_len: int
    mask: torch.Tensor | None  # (group_size, 1, 1, max_len) True = attend; None when unpadded


@dataclass(frozen=True)
class _ExtendSeq:
    start: int  # first row of this sequence in the flattened token dim
    num_new: int
    kv_index: torch.Tensor  # (seq_len,) KV slots of prefix + new tokens
    mask: torch.Tensor | None  # (num_new, seq_len) True = attend; None: no prefix, plain causal


@dataclass(frozen=True)
class _ExtendGroup:
    """Short extends padded to (group_size, max_new) queries over (group_size, max_len) keys."""

    q_index: torch.Tensor  # (group_size * max_new,) flat token row per padded query
    kv_index: torch.Tensor  # (group_size * max_len,) KV slots, row-major per sequence, padded
    out_pos: torch.Tensor  # (num_real,) padded query positions holding real tokens
    out_rows: torch.Tensor  # (num_real,) their flat token rows
    group_size: int
    max_new: int
    max_len: int
    # (group_size, 1, max_new, max_len) True = attend; repeated per query head sharing a KV head
    # (group_size, 1, heads_per_kv * max_new, max_len) at the first layer, then reused
    mask: torch.Tensor
    expanded_mask: list[torch.Tensor]


class TorchAttentionBackend(AttentionBackend):
    def __init__(self, kv_cache: KVCache, req_to_token_pool: ReqToTokenPool) -> None:
        super().__init__(kv_cache, req_to_token_pool)
        on_cpu = req_to_token_pool.req_to_token.device.type == "cpu"
        head_dim = kv_cache.k_buffer[0].shape[-1]
        self._cpu_kernel: CpuPagedAttention | None = (
            load_cpu_paged_attention() if on_cpu and supports_head_dim(head_dim) else None
        )
        self._prompt_kernel: CpuAmxPromptAttention | None = (
            load_cpu_amx_prompt_attention(kv_cache.dtype, head_dim)
            if self._cpu_kernel is not None
            else None
        )
        self._out_cache_loc = torch.empty(0, dtype=torch.int64)
        self._kernel_batch: _KernelBatch | None = None
        self._plan: list[_DecodeGroup | _ExtendSeq | _ExtendGroup] = []

    def prepare(self, batch: ForwardBatch) -> None:
        self._out_cache_loc = batch.out_cache_loc
        if self._cpu_kernel is not None:
            prompt_rows = (
                batch.prompt_rows_cpu
                if self._prompt_kernel is not None and batch.prompt_rows_cpu is not None
                else (0,) * batch.batch_size
            )
            self._kernel_batch = _KernelBatch(
                slots=self.req_to_token_pool.req_to_token[
                    batch.req_pool_indices, : max(batch.seq_lens_cpu)
                ],
                seq_lens=batch.seq_lens,
                extend_lens=torch.tensor(batch.extend_lens_cpu, dtype=torch.int64),
                prompt_rows=torch.tensor(prompt_rows, dtype=torch.int64),
                has_prompt_rows=any(prompt_rows),
            )
            return
        if batch.mode is ForwardMode.DECODE:
            groups = _length_groups(batch.seq_lens_cpu)
            self._plan = [self._decode_group(batch, rows, len(groups) > 1) for rows in groups]
            return
        self._plan = []
        starts, single, short = [], [], []
        start = 0
        for i, num_new in enumerate(batch.extend_lens_cpu):
            starts.append(start)
            start += num_new
            if num_new == 1 and batch.batch_size > 1:
                single.append(i)
            elif num_new <= _MAX_BATCHED_EXTEND and batch.batch_size > 1:
                short.append(i)
            else:
                self._plan.append(self._extend_seq(batch, i, starts[i]))
        if single:
            lens = tuple(batch.seq_lens_cpu[i] for i in single)
            for rows in _length_groups(lens):
                seqs = [single[r] for r in rows]
                self._plan.append(
                    self._decode_group(batch, seqs, True, token_rows=[starts[i] for i in seqs])
                )
        if short:
            for rows in _length_groups(tuple(batch.extend_lens_cpu[i] for i in short)):
                seqs = [short[r] for r in rows]
                self._plan.append(self._extend_group(batch, seqs, [starts[i] for i in seqs]))

    def _extend_seq(self, batch: ForwardBatch, i: int, start: int) -> _ExtendSeq:
        req_to_token = self.req_to_token_pool.req_to_token
        device = req_to_token.device
        prefix_len, num_new = batch.prefix_lens_cpu[i], batch.extend_lens_cpu[i]
        seq_len = prefix_len + num_new
        kv_index = req_to_token[batch.req_pool_indices[i], :seq_len]
        mask = None
        if prefix_len > 0:
            # New token t (absolute position prefix_len + t) sees keys 0..prefix_len + t.
            rows = torch.arange(prefix_len, seq_len, device=device)
            mask = torch.arange(seq_len, device=device)[None, :] <= rows[:, None]
        return _ExtendSeq(start, num_new, kv_index, mask)

    def _extend_group(
        self, batch: ForwardBatch, seqs: list[int], starts: list[int]
    ) -> _ExtendGroup:
        device = self.req_to_token_pool.req_to_token.device
        prefix_lens = [batch.prefix_lens_cpu[i] for i in seqs]
        num_news = [batch.extend_lens_cpu[i] for i in seqs]
        max_new = max(num_news)
        max_len = max(p + n for p, n in zip(prefix_lens, num_news, strict=True))
        # Padded query t of a sequence repeats its last real token, so every padded row sees at
        # least one key (no all-masked softmax) and its output is simply dropped.
        q_index, last_key, out_pos, out_rows = [], [], [], []
        for row, (start, prefix_len, num_new) in enumerate(
            zip(starts, prefix_lens, num_news, strict=True)
        ):
            for t in range(max_new):
                real_t = min(t, num_new - 1)
                q_index.append(start + real_t)
                last_key.append(prefix_len + real_t)
                if t < num_new:
                    out_pos.append(row * max_new + t)
                    out_rows.append(start + t)

        def as_tensor(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.int64, device=device)

        rows_tensor = as_tensor(seqs)
        # (group, max_len): slots past a sequence's end are stale but valid pool indices.
        slots = self.req_to_token_pool.req_to_token[
            batch.req_pool_indices.index_select(0, rows_tensor), :max_len
        ]
        # Query t of a sequence (absolute position prefix_len + t) sees keys 0..prefix_len + t.
        keys = torch.arange(max_len, device=device)
        mask = keys[None, :] <= as_tensor(last_key)[:, None]  # (group * max_new, max_len)
        return _ExtendGroup(
            q_index=as_tensor(q_index),
            kv_index=slots.reshape(-1),
            out_pos=as_tensor(out_pos),
            out_rows=as_tensor(out_rows),
            group_size=len(seqs),
            max_new=max_new,
            max_len=max_len,
            mask=mask.view(len(seqs), 1, max_new, max_len),
            expanded_mask=[],
        )

    def _decode_group(
        self,
        batch: ForwardBatch,
        rows: list[int],
        is_part: bool,
        token_rows: list[int] | None = None,
    ) -> _DecodeGroup:
        """``rows``: batch rows; ``token_rows``: their one new token's row in q when that is not
        the batch row (one-token rows of an extend batch)."""
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
        if token_rows is not None:
            rows_tensor = torch.tensor(token_rows, dtype=torch.int64, device=device)
        return _DecodeGroup(rows_tensor, slots, group_seq_lens, max_len, mask)

    def cpu_kernel_inputs(self) -> tuple[torch.Tensor, ...] | None:
        batch = self._kernel_batch
        if self._cpu_kernel is None or batch is None:
            return None
        return (
            self._out_cache_loc,
            batch.slots,
            batch.seq_lens,
            batch.extend_lens,
            batch.prompt_rows,
        )

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
        kernel_batch = self._kernel_batch
        if self._cpu_kernel is not None and kernel_batch is not None:
            # The kernel reads float32 queries beside K/V of any width; a token's heads must be
            # contiguous, its rows may sit apart (q is a view of the rotated [q | k]).
            queries = q.float()
            if queries.stride(-1) != 1 or queries.stride(-2) != queries.shape[-1]:
                queries = queries.contiguous()
            inputs = (kernel_batch.slots, kernel_batch.seq_lens, kernel_batch.extend_lens)
            prompt_rows = kernel_batch.prompt_rows
            out = self._cpu_kernel(queries, k_buffer, v_buffer, *inputs, prompt_rows, scaling)
            if kernel_batch.has_prompt_rows:
                self._prompt_kernel(queries, k_buffer, v_buffer, *inputs, prompt_rows, out, scaling)
            return out.to(q.dtype)
        # SDPA wants the queries in the K/V dtype (bfloat16 K/V beside float32 activations).
        return self._sdpa_forward(q.to(k_buffer.dtype), k_buffer, v_buffer, scaling).to(q.dtype)

    def _whole_batch_decode_group(self) -> _DecodeGroup | None:
        """The plan's only part when it is one decode group over every row of the batch."""
        plan = self._plan
        if len(plan) == 1 and isinstance(plan[0], _DecodeGroup) and plan[0].rows is None:
            return plan[0]
        return None

    def _sdpa_forward(
        self, q: torch.Tensor, k_buffer: torch.Tensor, v_buffer: torch.Tensor, scaling: float
    ) -> torch.Tensor:
        plan = self._plan
        whole_batch = self._whole_batch_decode_group()
        if whole_batch is not None:
            return _decode_attention(whole_batch, q, k_buffer, v_buffer, scaling)
        if len(plan) == 1 and isinstance(plan[0], _ExtendSeq):
            return _extend_attention(plan[0], q, k_buffer, v_buffer, scaling)
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        for part in plan:
            if isinstance(part, _DecodeGroup):
                group_q = q.index_select(0, part.rows)
                out.index_copy_(
                    0,
                    part.rows,
                    _decode_attention(part, group_q, k_buffer, v_buffer, scaling),
                )
            elif isinstance(part, _ExtendSeq):
                out[part.start : part.start + part.num_new] = _extend_attention(
                    part, q, k_buffer, v_buffer, scaling
                )
            else:
                padded = _extend_group_attention(part, q, k_buffer, v_buffer, scaling)
                out.index_copy_(0, part.out_rows, padded.index_select(0, part.out_pos))
        return out


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
    kv_index = group.slots.reshape(-1)
    keys = k_buffer.index_select(0, kv_index).view(shape)
    values = v_buffer.index_select(0, kv_index).view(shape)
    out = F.scaled_dot_product_attention(
        q.view(group_size, num_kv_heads, num_heads // num_kv_heads, head_dim),
        keys.transpose(1, 2),
        values.transpose(1, 2),
        attn_mask=group.mask,
        scale=scaling,
    )  # (group, kv_heads, group_heads, head_dim)
    return out.reshape(group_size, num_heads, head_dim)


def _extend_attention(
    seq: _ExtendSeq,
    q: torch.Tensor,  # (num_tokens, heads, dim), the whole pass
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    scaling: float,
) -> torch.Tensor:  # (num_new, heads, dim)
    heads_per_kv = q.shape[1] // k_buffer.shape[1]
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
    return out.transpose(0, 1)


def _extend_group_attention(
    group: _ExtendGroup,
    q: torch.Tensor,  # (num_tokens, heads, dim), the whole pass
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    scaling: float,
) -> torch.Tensor:  # (group_size * max_new, heads, dim), padded rows included
    _, num_heads, head_dim = q.shape
    num_kv_heads = k_buffer.shape[1]
    heads_per_kv = num_heads // num_kv_heads
    size, max_new, max_len = group.group_size, group.max_new, group.max_len
    # (group, max_new, kv_heads, heads_per_kv, dim) -> (group, kv_heads, heads_per_kv * max_new,
    # dim): the query heads sharing a KV head ride along the query axis, as in decode.
    group_q = q.index_select(0, group.q_index).view(
        size, max_new, num_kv_heads, heads_per_kv, head_dim
    )
    group_q = group_q.permute(0, 2, 3, 1, 4).reshape(
        size, num_kv_heads, heads_per_kv * max_new, head_dim
    )
    if not group.expanded_mask:  # the first layer of the pass
        # (group, 1, heads_per_kv * max_new, max_len), in the query layout below
        group.expanded_mask.append(group.mask.repeat(1, 1, heads_per_kv, 1))
    mask = group.expanded_mask[0]
    shape = (size, max_len, num_kv_heads, head_dim)
    keys = k_buffer.index_select(0, group.kv_index).view(shape)
    values = v_buffer.index_select(0, group.kv_index).view(shape)
    out = F.scaled_dot_product_attention(
        group_q, keys.transpose(1, 2), values.transpose(1, 2), attn_mask=mask, scale=scaling
    )  # (group, kv_heads, heads_per_kv * max_new, dim)
    out = out.view(size, num_kv_heads, heads_per_kv, max_new, head_dim).permute(0, 3, 1, 2, 4)
    return out.reshape(size * max_new, num_heads, head_dim)
