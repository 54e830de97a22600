"""The GPU attention backends (flashinfer, triton) against the pure-torch reference through the
AttentionBackend interface: fresh prompts, a chunked-prefill continuation, a radix-cache hit
(a second sequence listing the first one's prefix slots), decode, and decode under a CUDA
graph replayed with new lengths."""

from __future__ import annotations

import random

import pytest
import torch

pytest.importorskip("triton")

from radixlm.kernels.reference import paged_attention_reference  # noqa: E402
from radixlm.runtime.attention.base import get_attention_backend_class  # noqa: E402
from radixlm.runtime.forward_batch import ForwardBatch, ForwardMode, build_forward_batch  # noqa: E402
from radixlm.runtime.memory_pool import KVCache, KVSlotAllocator, ReqToTokenPool  # noqa: E402

pytestmark = pytest.mark.gpu

DEVICE = "cuda"
TOL = 1e-2  # relative error of bf16 outputs against the float32 reference
NUM_LAYERS = 2


def backend_names() -> list:
    names = [pytest.param("triton")]
    try:
        import flashinfer  # noqa: F401

        names.append(pytest.param("flashinfer"))
    except ImportError:
        names.append(pytest.param("flashinfer", marks=pytest.mark.skip("flashinfer missing")))
    return names


class Pools:
    def __init__(self, num_kv_heads: int, head_dim: int) -> None:
        self.kv_cache = KVCache(2048, NUM_LAYERS, num_kv_heads, head_dim, torch.bfloat16, DEVICE)
        self.req_to_token_pool = ReqToTokenPool(8, 1024, DEVICE)
        self.allocator = KVSlotAllocator(2048)
        self.rng = random.Random(0)
        self.slots: dict[int, list[int]] = {}  # row -> its KV slots so far

    def new_row(self, share_from: int | None = None, prefix_len: int = 0) -> int:
        row = self.req_to_token_pool.alloc()
        self.slots[row] = (
            list(self.slots[share_from][:prefix_len]) if share_from is not None else []
        )
        self.req_to_token_pool.write(row, 0, self.slots[row])
        return row

    def batch(self, mode: ForwardMode, items: list[tuple[int, int]]) -> ForwardBatch:
        """items: (row, number of new tokens); random token ids, scattered new slots."""
        prefix_lens, out_cache_loc = [], []
        for row, num_new in items:
            prefix_lens.append(len(self.slots[row]))
            new = self.allocator.alloc(num_new)
            self.rng.shuffle(new)
            self.req_to_token_pool.write(row, len(self.slots[row]), new)
            self.slots[row] += new
            out_cache_loc += new
        return build_forward_batch(
            mode,
            [[1] * n for _, n in items],
            prefix_lens,
            [row for row, _ in items],
            out_cache_loc,
            device=DEVICE,
        )


def check_pass(
    backend, pools: Pools, batch: ForwardBatch, num_heads: int, _num_kv_heads: int, head_dim: int
) -> None:
    num_kv_heads = pools.kv_cache.k_buffer[0].shape[1]
    backend.prepare(batch)
    for layer in range(NUM_LAYERS):
        # q and k as views of one fused tensor, like the model's rotary output.
        qk = torch.randn(batch.num_tokens, num_heads + num_kv_heads, head_dim, device=DEVICE)
        qk = qk.to(torch.bfloat16)
        q, k = qk[:, :num_heads], qk[:, num_heads:]
        v = torch.randn(batch.num_tokens, num_kv_heads, head_dim, device=DEVICE).bfloat16()
        out = backend.forward(q, k, v, layer, head_dim**-0.5)
        k_buffer = pools.kv_cache.k_buffer[layer]
        v_buffer = pools.kv_cache.v_buffer[layer]
        assert torch.equal(k_buffer[batch.out_cache_loc], k)
        assert torch.equal(v_buffer[batch.out_cache_loc], v)
        expected = paged_attention_reference(
            q,
            k_buffer,
            v_buffer,
            pools.req_to_token_pool.req_to_token,
            batch.req_pool_indices.tolist(),
            list(batch.seq_lens_cpu),
            list(batch.extend_lens_cpu),
            head_dim**-0.5,
        )
        err = ((out.float() - expected.float()).norm() / expected.float().norm()).item()
        assert err < TOL, (batch.mode, layer, err)


@pytest.mark.parametrize("name", backend_names())
@pytest.mark.parametrize("heads", [(9, 3, 64), (32, 8, 128), (14, 2, 64)])
def test_prefill_radix_hit_and_decode_match_reference(name, heads):
    num_heads, num_kv_heads, head_dim = heads
    pools = Pools(num_kv_heads, head_dim)
    backend = get_attention_backend_class(name)(pools.kv_cache, pools.req_to_token_pool)
    a, c = pools.new_row(), pools.new_row()
    check_pass(backend, pools, pools.batch(ForwardMode.EXTEND, [(a, 300), (c, 5)]), *heads)
    # B hits A's first 256 tokens in the radix cache; A continues its chunked prefill.
    b = pools.new_row(share_from=a, prefix_len=256)
    check_pass(backend, pools, pools.batch(ForwardMode.EXTEND, [(b, 44), (a, 20)]), *heads)
    for _ in range(3):
        batch = pools.batch(ForwardMode.DECODE, [(a, 1), (b, 1), (c, 1)])
        check_pass(backend, pools, batch, *heads)


@pytest.mark.parametrize("name", backend_names())
@pytest.mark.parametrize("heads", [(9, 3, 64), (32, 8, 128)])
def test_decode_in_a_cuda_graph_replays_with_new_lengths(name, heads):
    num_heads, num_kv_heads, head_dim = heads
    pools = Pools(num_kv_heads, head_dim)
    backend = get_attention_backend_class(name)(pools.kv_cache, pools.req_to_token_pool)
    rows = [pools.new_row() for _ in range(3)]
    pools.batch(ForwardMode.EXTEND, [(r, n) for r, n in zip(rows, [700, 9, 64], strict=True)])
    pools.kv_cache.k_buffer[0].normal_()  # the prompts' K/V, as a prefill would leave them
    pools.kv_cache.v_buffer[0].normal_()
    bs = 4  # three real rows and one padding row, as the graph runner pads
    static = {
        key: torch.zeros(bs, dtype=torch.int64, device=DEVICE)
        for key in ("ids", "pos", "loc", "rows", "lens")
    }
    q = torch.zeros(bs, num_heads, head_dim, dtype=torch.bfloat16, device=DEVICE)
    k = torch.zeros(bs, num_kv_heads, head_dim, dtype=torch.bfloat16, device=DEVICE)
    v = torch.zeros_like(k)

    def static_batch(seq_lens: tuple[int, ...]) -> ForwardBatch:
        return ForwardBatch(
            mode=ForwardMode.DECODE,
            input_ids=static["ids"],
            positions=static["pos"],
            out_cache_loc=static["loc"],
            req_pool_indices=static["rows"],
            seq_lens=static["lens"],
            prefix_lens=static["pos"],
            extend_lens=torch.ones_like(static["ids"]),
            logits_indices=torch.arange(bs, device=DEVICE),
            seq_lens_cpu=seq_lens,
            prefix_lens_cpu=tuple(n - 1 for n in seq_lens),
            extend_lens_cpu=(1,) * bs,
        )

    backend.init_cuda_graph_state(8, num_heads)
    static["lens"].fill_(1)
    capture_batch = static_batch((1,) * bs)
    backend.prepare_cuda_graph(capture_batch)
    backend.forward(q, k, v, 0, head_dim**-0.5)  # warm-up: compiles outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    backend.prepare_cuda_graph(capture_batch)
    with torch.cuda.graph(graph):
        out = backend.forward(q, k, v, 0, head_dim**-0.5)
    for _ in range(2):
        real = pools.batch(ForwardMode.DECODE, [(r, 1) for r in rows])
        static["loc"][:3].copy_(real.out_cache_loc)
        static["loc"][3] = 0  # the padding row writes the padding slot
        static["rows"][:3].copy_(real.req_pool_indices)
        static["lens"][:3].copy_(real.seq_lens)
        static["lens"][3] = 1
        q.copy_(torch.randn(q.shape, device=DEVICE))
        k.copy_(torch.randn(k.shape, device=DEVICE))
        v.copy_(torch.randn(v.shape, device=DEVICE))
        backend.prepare_cuda_graph(static_batch(real.seq_lens_cpu + (1,)))
        graph.replay()
        k_buffer = pools.kv_cache.k_buffer[0]
        assert torch.equal(k_buffer[real.out_cache_loc], k[:3])
        expected = paged_attention_reference(
            q[:3],
            k_buffer,
            pools.kv_cache.v_buffer[0],
            pools.req_to_token_pool.req_to_token,
            rows,
            list(real.seq_lens_cpu),
            [1, 1, 1],
            head_dim**-0.5,
        )
        err = ((out[:3].float() - expected.float()).norm() / expected.float().norm()).item()
        assert err < TOL
