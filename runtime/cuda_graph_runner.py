"""CUDA graphs for decode: one captured forward pass per padded batch size, replayed.

A decode step of a small model is hundreds of short kernels; launching them one by one from
Python costs more than running them. Capturing the whole pass (model, attention, LM head)
once per batch size and replaying it makes a step one launch. The model knows nothing of
this: the runner captures ``model(...)`` from outside, over static input buffers.

A batch of ``n`` sequences replays the graph of the smallest captured size ``>= n``. The
padding rows write their K/V to slot 0 (the pool's padding slot), read one key through row 0
of ``req_to_token`` and their logits are never returned.
"""

from __future__ import annotations

import bisect

import torch
from torch import nn

from radixlm.runtime.attention.base import AttentionBackend
from radixlm.runtime.forward_batch import PACKED_ROWS, ForwardBatch, ForwardMode


def capture_batch_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, then every multiple of 8 up to ``max_batch_size`` (which is always included)."""
    sizes = [bs for bs in (1, 2, 4) if bs <= max_batch_size]
    sizes += list(range(8, max_batch_size + 1, 8))
    if sizes[-1] != max_batch_size:
        sizes.append(max_batch_size)
    return sizes


class CudaGraphRunner:
    def __init__(
        self,
        model: nn.Module,
        attn_backend: AttentionBackend,
        num_heads: int,
        max_batch_size: int,
        device: torch.device,
    ) -> None:
        assert attn_backend.supports_cuda_graph, type(attn_backend).__name__
        assert max_batch_size >= 1
        self.model = model
        self.attn_backend = attn_backend
        self.batch_sizes = capture_batch_sizes(max_batch_size)
        self.max_batch_size = self.batch_sizes[-1]
        n = self.max_batch_size

        # The graphs' inputs: the rows of one (len(PACKED_ROWS), n) tensor, so a decode batch
        # built by build_forward_batch lands in them with one copy. Idle rows hold the padding
        # values: token 0 at position 0, writing slot 0, one key long, reading row 0 of
        # req_to_token.
        padding = {"seq_lens": 1, "extend_lens": 1}
        column = torch.tensor([padding.get(name, 0) for name in PACKED_ROWS], dtype=torch.int64)
        self.static = column.view(-1, 1).repeat(1, n).to(device)  # (len(PACKED_ROWS), n)
        self.padding = self.static.clone()  # copied over the rows a smaller batch leaves idle
        (
            self.input_ids,
            self.positions,
            self.out_cache_loc,
            self.req_pool_indices,
            self.seq_lens,
            self.prefix_lens,
            self.extend_lens,
        ) = self.static.unbind(0)
        self.logits_indices = torch.arange(n, dtype=torch.int64, device=device)
        self._identity = self.logits_indices.clone()
        self._logits_are_rows = True  # logits_indices holds arange(n)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.logits: dict[int, torch.Tensor] = {}  # each graph's output buffer
        attn_backend.init_cuda_graph_state(n, num_heads)
        self._capture_all()

    def can_run(self, batch: ForwardBatch) -> bool:
        return batch.mode is ForwardMode.DECODE and batch.batch_size <= self.max_batch_size

    @torch.inference_mode()
    def replay(self, batch: ForwardBatch) -> torch.Tensor:
        """Float32 logits (num_logits, vocab) for ``batch.logits_indices``.

        The result is a view of the graph's output buffer: read it before the next replay.
        """
        num_real = batch.batch_size
        bs = self.batch_sizes[bisect.bisect_left(self.batch_sizes, num_real)]
        num_logits = batch.logits_indices.shape[0]
        if batch.packed is not None:
            self.static[:, :num_real].copy_(batch.packed)
        else:
            for name, row in zip(PACKED_ROWS, self.static, strict=True):
                row[:num_real].copy_(getattr(batch, name))
        if num_real < bs:
            # A larger batch may have left real slots here: padding must write slot 0 only.
            self.static[:, num_real:bs].copy_(self.padding[:, num_real:bs])
        if batch.logits_are_rows:
            if not self._logits_are_rows:
                self.logits_indices.copy_(self._identity)
                self._logits_are_rows = True
        else:
            self.logits_indices[:num_logits].copy_(batch.logits_indices)
            # Stale rows may point past this graph's batch: aim them at row 0.
            self.logits_indices[num_logits:].zero_()
            self._logits_are_rows = False
        seq_lens_cpu = batch.seq_lens_cpu + (1,) * (bs - num_real)
        self.attn_backend.prepare_cuda_graph(self._static_batch(bs, seq_lens_cpu))
        self.graphs[bs].replay()
        return self.logits[bs][:num_logits]

    def _static_batch(self, bs: int, seq_lens_cpu: tuple[int, ...]) -> ForwardBatch:
        return ForwardBatch(
            mode=ForwardMode.DECODE,
            input_ids=self.input_ids[:bs],
            positions=self.positions[:bs],
            out_cache_loc=self.out_cache_loc[:bs],
            req_pool_indices=self.req_pool_indices[:bs],
            seq_lens=self.seq_lens[:bs],
            prefix_lens=self.prefix_lens[:bs],
            extend_lens=self.extend_lens[:bs],
            logits_indices=self.logits_indices[:bs],
            seq_lens_cpu=seq_lens_cpu,
            prefix_lens_cpu=tuple(n - 1 for n in seq_lens_cpu),
            extend_lens_cpu=(1,) * bs,
        )

    def _forward(self, batch: ForwardBatch) -> torch.Tensor:
        hidden_states = self.model(batch.input_ids, batch.positions, batch, self.attn_backend)
        return self.model.compute_logits(hidden_states[batch.logits_indices])

    @torch.inference_mode()
    def _capture_all(self) -> None:
        pool = None
        stream = torch.cuda.Stream()
        # Largest first: the smaller graphs then fit in the memory pool it leaves behind.
        for bs in reversed(self.batch_sizes):
            batch = self._static_batch(bs, (1,) * bs)
            with torch.cuda.stream(stream):
                # Warm-up outside the graph: compiles kernels, plans, settles allocations.
                for _ in range(2):
                    self.attn_backend.prepare_cuda_graph(batch)
                    self._forward(batch)
            stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            self.attn_backend.prepare_cuda_graph(batch)
            with torch.cuda.graph(graph, pool=pool, stream=stream):
                self.logits[bs] = self._forward(batch)
            pool = graph.pool()
            self.graphs[bs] = graph
        torch.cuda.synchronize()
