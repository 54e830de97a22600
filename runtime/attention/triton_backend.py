"""Attention through our own Triton kernels (kernels/): the GPU fallback when FlashInfer is
missing, and a second opinion on FlashInfer's numbers.

Extend batches store the new K/V, then run one paged kernel with the causal mask offset by
each sequence's cached prefix. Decode batches run the split-KV kernel, whose launch depends
on the batch size only, so a decode pass can be captured in a CUDA graph as is.
"""

from __future__ import annotations

import torch

from radixlm.kernels.decode_attention import DecodeWorkspace, decode_attention, decode_num_splits
from radixlm.kernels.extend_attention import extend_attention
from radixlm.kernels.kv_store import store_kv
from radixlm.runtime.attention.base import AttentionBackend
from radixlm.runtime.forward_batch import ForwardBatch, ForwardMode
from radixlm.runtime.memory_pool import KVCache, ReqToTokenPool


class TritonAttentionBackend(AttentionBackend):
    supports_cuda_graph = True

    def __init__(self, kv_cache: KVCache, req_to_token_pool: ReqToTokenPool) -> None:
        super().__init__(kv_cache, req_to_token_pool)
        self.device = kv_cache.k_buffer[0].device
        assert self.device.type == "cuda", "the triton attention backend needs a CUDA device"
        _, self.num_kv_heads, self.head_dim = kv_cache.k_buffer[0].shape
        self.num_sms = torch.cuda.get_device_properties(self.device).multi_processor_count
        # Sized from the query head count, which the first decode pass (or the graph runner)
        # tells us; the KV pool alone does not know it.
        self.workspace: DecodeWorkspace | None = None
        self._batch: ForwardBatch | None = None
        self._num_splits = 1
        self._extend_starts = torch.empty(0, dtype=torch.int64, device=self.device)
        self._max_extend_len = 0

    def prepare(self, batch: ForwardBatch) -> None:
        self._batch = batch
        if batch.mode is ForwardMode.DECODE:
            self._num_splits = decode_num_splits(batch.batch_size, self.num_kv_heads, self.num_sms)
            return
        # Exclusive prefix sum on the device: no host round trip.
        self._extend_starts = torch.cumsum(batch.extend_lens, 0) - batch.extend_lens
        self._max_extend_len = max(batch.extend_lens_cpu)

    def init_cuda_graph_state(self, max_batch_size: int, num_heads: int) -> None:
        self._ensure_workspace(num_heads)

    def prepare_cuda_graph(self, batch: ForwardBatch) -> None:
        assert batch.mode is ForwardMode.DECODE and self.workspace is not None
        self.prepare(batch)

    def forward(
        self,
        q: torch.Tensor,  # (num_tokens, num_heads, head_dim)
        k: torch.Tensor,  # (num_tokens, num_kv_heads, head_dim)
        v: torch.Tensor,
        layer_id: int,
        scaling: float,
    ) -> torch.Tensor:
        batch = self._batch
        assert batch is not None, "prepare() must run before forward()"
        k_buffer = self.kv_cache.k_buffer[layer_id]
        v_buffer = self.kv_cache.v_buffer[layer_id]
        store_kv(k_buffer, v_buffer, batch.out_cache_loc, k, v)
        req_to_token = self.req_to_token_pool.req_to_token
        if batch.mode is ForwardMode.DECODE:
            workspace = self._ensure_workspace(q.shape[1])
            return decode_attention(
                q,
                k_buffer,
                v_buffer,
                req_to_token,
                batch.req_pool_indices,
                batch.seq_lens,
                scaling,
                self._num_splits,
                workspace,
            )
        return extend_attention(
            q,
            k_buffer,
            v_buffer,
            req_to_token,
            batch.req_pool_indices,
            batch.seq_lens,
            batch.extend_lens,
            self._extend_starts,
            self._max_extend_len,
            scaling,
        )

    def _ensure_workspace(self, num_heads: int) -> DecodeWorkspace:
        if self.workspace is None:
            self.workspace = DecodeWorkspace(
                num_heads, self.num_kv_heads, self.head_dim, self.num_sms, self.device
            )
        return self.workspace
