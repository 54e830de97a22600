"""Attention through FlashInfer's paged kernels: the default on GPU.

The pool is token-granular, so it is handed to FlashInfer as pages of size 1: the
``(num_slots, num_kv_heads, head_dim)`` buffers viewed as ``(num_pages, 1, heads, dim)``.
A batch's page table (``kv_indptr`` / ``kv_indices``) is every sequence's KV slots in order,
gathered on the device from ``req_to_token`` (kernels/kv_indices.py), so prefixes shared
through the radix cache are simply the same slots listed in several sequences.

Extend batches store the new K/V first, then run one paged prefill with a causal mask, which
FlashInfer aligns to the end of each sequence (new token ``i`` of ``n`` sees the prefix and
new tokens ``0..i``). Decode batches run the paged decode kernel; for CUDA graphs there is one
decode wrapper per captured batch size, all sharing fixed index buffers.

Planning needs the query head count, which the KV pool does not know: eager passes plan on
their first ``forward`` call, graph passes in ``prepare_cuda_graph`` (the graph runner gives
the head count to ``init_cuda_graph_state``).
"""

from __future__ import annotations

import flashinfer
import torch

from radixlm.kernels.kv_indices import gather_kv_indices
from radixlm.kernels.kv_store import store_kv
from radixlm.runtime.attention.base import AttentionBackend
from radixlm.runtime.forward_batch import ForwardBatch, ForwardMode
from radixlm.runtime.memory_pool import KVCache, ReqToTokenPool

# Split-KV scratch shared by all wrappers (one pass runs at a time); FlashInfer's advice.
WORKSPACE_BYTES = 256 * 1024 * 1024
# FlashAttention-2 style kernels: they JIT-compile far faster than the FA3 ones and are the
# path FlashInfer's own CUDA-graph decode is tested with.
FLASHINFER_KERNELS = "fa2"


def use_tensor_cores_for_decode(num_heads: int, num_kv_heads: int) -> bool:
    # With a GQA group of 4+ query heads per KV head the prefill (tensor-core) kernels win.
    return num_heads // num_kv_heads >= 4


class FlashInferAttentionBackend(AttentionBackend):
    supports_cuda_graph = True

    def __init__(self, kv_cache: KVCache, req_to_token_pool: ReqToTokenPool) -> None:
        super().__init__(kv_cache, req_to_token_pool)
        self.device = kv_cache.k_buffer[0].device
        self.dtype = kv_cache.k_buffer[0].dtype
        _, self.num_kv_heads, self.head_dim = kv_cache.k_buffer[0].shape
        self.workspace = torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8, device=self.device)
        self.prefill_wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(
            self.workspace, "NHD", backend=FLASHINFER_KERNELS
        )
        self._decode_wrapper: flashinfer.BatchDecodeWithPagedKVCacheWrapper | None = None
        self._graph_wrappers: dict[int, flashinfer.BatchDecodeWithPagedKVCacheWrapper] = {}
        # Fixed buffers of graph passes (init_cuda_graph_state): our gathered page table,
        # and the indptr / indices / last-page lengths the graph wrappers read.
        self._graph_kv_indices = torch.empty(0, dtype=torch.int32, device=self.device)
        self._graph_fi_indices = torch.empty(0, dtype=torch.int32, device=self.device)
        self._graph_indptr = torch.empty(0, dtype=torch.int32, device=self.device)
        self._graph_last_page_len = torch.empty(0, dtype=torch.int32, device=self.device)
        self._num_heads: int | None = None
        # Softmax scale baked into each plan; every model here uses head_dim ** -0.5 and
        # forward() checks the layer agrees.
        self._scaling = self.head_dim**-0.5
        # Per-batch state set by prepare(): the batch, its device page table and whether
        # the wrapper for this pass has been planned yet.
        self._batch: ForwardBatch | None = None
        self._kv_indices = torch.empty(0, dtype=torch.int32, device=self.device)
        self._wrapper: (
            flashinfer.BatchDecodeWithPagedKVCacheWrapper
            | flashinfer.BatchPrefillWithPagedKVCacheWrapper
            | None
        ) = None
        self._planned = False

    # ---- eager passes ---------------------------------------------------------------------

    def prepare(self, batch: ForwardBatch) -> None:
        self._batch = batch
        total = sum(batch.seq_lens_cpu)
        self._kv_indices = torch.empty(total, dtype=torch.int32, device=self.device)
        gather_kv_indices(
            self.req_to_token_pool.req_to_token,
            batch.req_pool_indices,
            batch.seq_lens,
            self._kv_indices,
        )
        self._planned = False

    def _plan_eager(self, num_heads: int) -> None:
        batch = self._batch
        assert batch is not None, "prepare() must run before forward()"
        self._num_heads = num_heads
        kv_indptr = _indptr(batch.seq_lens_cpu)
        last_page_len = torch.ones(batch.batch_size, dtype=torch.int32)
        if batch.mode is ForwardMode.DECODE:
            if self._decode_wrapper is None:
                self._decode_wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
                    self.workspace,
                    "NHD",
                    use_tensor_cores=use_tensor_cores_for_decode(num_heads, self.num_kv_heads),
                    backend=FLASHINFER_KERNELS,
                )
            self._decode_wrapper.plan(
                kv_indptr,
                self._kv_indices,
                last_page_len,
                num_heads,
                self.num_kv_heads,
                self.head_dim,
                1,  # page size
                q_data_type=self.dtype,
                kv_data_type=self.dtype,
                sm_scale=self._scaling,
            )
            self._wrapper = self._decode_wrapper
        else:
            self.prefill_wrapper.plan(
                _indptr(batch.extend_lens_cpu),
                kv_indptr,
                self._kv_indices,
                last_page_len,
                num_heads,
                self.num_kv_heads,
                self.head_dim,
                1,  # page size
                causal=True,
                q_data_type=self.dtype,
                kv_data_type=self.dtype,
                sm_scale=self._scaling,
            )
            self._wrapper = self.prefill_wrapper
        self._planned = True

    # ---- CUDA graphs ------------------------------------------------------------------------

    def init_cuda_graph_state(self, max_batch_size: int, num_heads: int) -> None:
        self._num_heads = num_heads
        max_context_len = self.req_to_token_pool.max_context_len
        self._graph_kv_indices = torch.empty(
            max_batch_size * max_context_len, dtype=torch.int32, device=self.device
        )
        self._graph_indptr = torch.zeros(max_batch_size + 1, dtype=torch.int32, device=self.device)
        self._graph_last_page_len = torch.ones(
            max_batch_size, dtype=torch.int32, device=self.device
        )
        self._graph_fi_indices = torch.empty_like(self._graph_kv_indices)

    def prepare_cuda_graph(self, batch: ForwardBatch) -> None:
        assert batch.mode is ForwardMode.DECODE and self._num_heads is not None
        bs = batch.batch_size
        wrapper = self._graph_wrappers.get(bs)
        if wrapper is None:
            wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
                self.workspace,
                "NHD",
                use_cuda_graph=True,
                use_tensor_cores=use_tensor_cores_for_decode(self._num_heads, self.num_kv_heads),
                paged_kv_indptr_buffer=self._graph_indptr[: bs + 1],
                paged_kv_indices_buffer=self._graph_fi_indices,
                paged_kv_last_page_len_buffer=self._graph_last_page_len[:bs],
                backend=FLASHINFER_KERNELS,
            )
            self._graph_wrappers[bs] = wrapper
        self._batch = batch
        total = sum(batch.seq_lens_cpu)
        kv_indices = self._graph_kv_indices[:total]
        gather_kv_indices(
            self.req_to_token_pool.req_to_token, batch.req_pool_indices, batch.seq_lens, kv_indices
        )
        wrapper.plan(
            _indptr(batch.seq_lens_cpu),
            kv_indices,  # copied into the wrapper's fixed buffer
            torch.ones(bs, dtype=torch.int32),
            self._num_heads,
            self.num_kv_heads,
            self.head_dim,
            1,  # page size
            q_data_type=self.dtype,
            kv_data_type=self.dtype,
            sm_scale=self._scaling,
        )
        self._wrapper = wrapper
        self._planned = True

    # ---- every pass -------------------------------------------------------------------------

    def forward(
        self,
        q: torch.Tensor,  # (num_tokens, num_heads, head_dim)
        k: torch.Tensor,  # (num_tokens, num_kv_heads, head_dim)
        v: torch.Tensor,
        layer_id: int,
        scaling: float,
    ) -> torch.Tensor:
        if scaling != self._scaling:
            raise ValueError(f"planned softmax scale {self._scaling}, layer asks {scaling}")
        if not self._planned:
            self._plan_eager(q.shape[1])
        batch = self._batch
        assert batch is not None and self._wrapper is not None
        k_buffer = self.kv_cache.k_buffer[layer_id]
        v_buffer = self.kv_cache.v_buffer[layer_id]
        store_kv(k_buffer, v_buffer, batch.out_cache_loc, k, v)
        # (num_slots, kv_heads, dim) -> (num_pages, page_size=1, kv_heads, dim)
        paged = (k_buffer.unsqueeze(1), v_buffer.unsqueeze(1))
        return self._wrapper.run(q, paged)


def _indptr(lengths: tuple[int, ...]) -> torch.Tensor:
    """Host int32 ``[0, l0, l0 + l1, ...]``: FlashInfer plans on the host from it."""
    out = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    out[1:] = torch.tensor(lengths, dtype=torch.int32).cumsum(0)
    return out
