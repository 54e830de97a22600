"""Each Triton kernel in kernels/ against its pure-torch reference on random inputs (fresh per
case), on the GPU. Attention outputs are poisoned with NaN first, so a row the kernel never
writes fails the comparison."""

from __future__ import annotations

import random

import pytest
import torch

pytest.importorskip("triton")

from radixlm.kernels import reference as ref  # noqa: E402
from radixlm.kernels.activation import silu_and_mul  # noqa: E402
from radixlm.kernels.decode_attention import (  # noqa: E402
    DecodeWorkspace,
    decode_attention,
    decode_num_splits,
)
from radixlm.kernels.extend_attention import extend_attention  # noqa: E402
from radixlm.kernels.gemv import GemvConfig, gemv  # noqa: E402
from radixlm.kernels.kv_indices import gather_kv_indices  # noqa: E402
from radixlm.kernels.kv_store import store_kv  # noqa: E402
from radixlm.kernels.rmsnorm import rmsnorm  # noqa: E402
from radixlm.kernels.rotary import apply_rotary  # noqa: E402

pytestmark = pytest.mark.gpu

DEVICE = "cuda"
# ||out - ref|| / ||ref|| bounds: bf16/fp16 outputs round at ~4e-3 per element.
ATTENTION_TOL = {torch.bfloat16: 1e-2, torch.float16: 3e-3, torch.float32: 1e-5}
ELEMENTWISE_TOL = {torch.bfloat16: 8e-3, torch.float16: 1e-3, torch.float32: 1e-6}
# (num_heads, num_kv_heads, head_dim): MHA, SmolLM2 (group 3), Llama-3 (4), Qwen2.5 (7).
HEAD_SHAPES = [(4, 4, 64), (9, 3, 64), (32, 8, 128), (14, 2, 64)]


def rel_err(out: torch.Tensor, expected: torch.Tensor) -> float:
    return ((out.float() - expected.float()).norm() / expected.float().norm()).item()


class PagedLayout:
    """A KV pool of random contents and sequences whose slots are scattered over it."""

    def __init__(self, seq_lens: list[int], num_kv_heads: int, head_dim: int, dtype, seed: int):
        gen = torch.Generator(device="cpu").manual_seed(seed)
        num_slots = sum(seq_lens) + 64
        self.k_buffer = torch.randn(num_slots, num_kv_heads, head_dim, generator=gen).to(
            DEVICE, dtype
        )
        self.v_buffer = torch.randn(num_slots, num_kv_heads, head_dim, generator=gen).to(
            DEVICE, dtype
        )
        self.seq_lens = seq_lens
        rows = list(range(len(seq_lens) + 3))
        random.Random(seed).shuffle(rows)
        self.rows = rows[: len(seq_lens)]
        self.req_to_token = torch.zeros(
            len(seq_lens) + 3, max(seq_lens) + 5, dtype=torch.int64, device=DEVICE
        )
        slots = (torch.randperm(num_slots - 1, generator=gen) + 1).tolist()
        for row, n in zip(self.rows, seq_lens, strict=True):
            self.req_to_token[row, :n] = torch.tensor(slots[:n])
            slots = slots[n:]

    def tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int64, device=DEVICE)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("heads", HEAD_SHAPES)
def test_extend_attention_matches_reference(dtype, heads):
    num_heads, num_kv_heads, head_dim = heads
    # Prefix 0 (fresh prompt), short and long prefixes, one token, and > one query block.
    extend_lens = [37, 1, 130, 5, 64]
    prefix_lens = [0, 200, 19, 0, 333]
    seq_lens = [p + e for p, e in zip(prefix_lens, extend_lens, strict=True)]
    layout = PagedLayout(seq_lens, num_kv_heads, head_dim, dtype, seed=1)
    q = torch.randn(sum(extend_lens), num_heads, head_dim, device=DEVICE).to(dtype)
    starts = [sum(extend_lens[:i]) for i in range(len(extend_lens))]
    out = torch.full_like(q, float("nan"))
    extend_attention(
        q,
        layout.k_buffer,
        layout.v_buffer,
        layout.req_to_token,
        layout.tensor(layout.rows),
        layout.tensor(seq_lens),
        layout.tensor(extend_lens),
        layout.tensor(starts),
        max(extend_lens),
        head_dim**-0.5,
        out=out,
    )
    expected = ref.paged_attention_reference(
        q,
        layout.k_buffer,
        layout.v_buffer,
        layout.req_to_token,
        layout.rows,
        seq_lens,
        extend_lens,
        head_dim**-0.5,
    )
    assert rel_err(out, expected) < ATTENTION_TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("heads", HEAD_SHAPES)
@pytest.mark.parametrize("num_splits", [1, 2, 16, None])
def test_decode_attention_matches_reference(dtype, heads, num_splits):
    num_heads, num_kv_heads, head_dim = heads
    # Lengths below the split count leave empty splits; 1 is a fresh one-token sequence.
    seq_lens = [1, 7, 1024, 333, 65, 2]
    layout = PagedLayout(seq_lens, num_kv_heads, head_dim, dtype, seed=2)
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    if num_splits is None:
        num_splits = decode_num_splits(len(seq_lens), num_kv_heads, num_sms)
    workspace = DecodeWorkspace(num_heads, num_kv_heads, head_dim, num_sms, DEVICE)
    # q as a strided view, the way the model hands it over (a slice of the fused qk tensor).
    qk = torch.randn(len(seq_lens), num_heads + num_kv_heads, head_dim, device=DEVICE).to(dtype)
    q = qk[:, :num_heads]
    out = torch.full((len(seq_lens), num_heads, head_dim), float("nan"), dtype=dtype, device=DEVICE)
    decode_attention(
        q,
        layout.k_buffer,
        layout.v_buffer,
        layout.req_to_token,
        layout.tensor(layout.rows),
        layout.tensor(seq_lens),
        head_dim**-0.5,
        num_splits,
        workspace,
        out=out,
    )
    expected = ref.paged_attention_reference(
        q,
        layout.k_buffer,
        layout.v_buffer,
        layout.req_to_token,
        layout.rows,
        seq_lens,
        [1] * len(seq_lens),
        head_dim**-0.5,
    )
    assert rel_err(out, expected) < ATTENTION_TOL[dtype]


def test_decode_attention_replays_in_a_cuda_graph_with_new_lengths():
    """The launch depends on the batch shape only: a graph captured at one set of lengths
    must give the right answer for other lengths and rows copied into the same buffers."""
    num_heads, num_kv_heads, head_dim, dtype = 32, 8, 128, torch.bfloat16
    layout = PagedLayout([900, 3, 512, 64], num_kv_heads, head_dim, dtype, seed=3)
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    workspace = DecodeWorkspace(num_heads, num_kv_heads, head_dim, num_sms, DEVICE)
    num_splits = decode_num_splits(4, num_kv_heads, num_sms)
    q = torch.empty(4, num_heads, head_dim, dtype=dtype, device=DEVICE)
    rows = layout.tensor(layout.rows)
    seq_lens = layout.tensor([1, 1, 1, 1])
    out = torch.empty_like(q)

    def run() -> None:
        decode_attention(
            q,
            layout.k_buffer,
            layout.v_buffer,
            layout.req_to_token,
            rows,
            seq_lens,
            head_dim**-0.5,
            num_splits,
            workspace,
            out=out,
        )

    run()  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    # Replay with the rows in another order and lengths other than at capture.
    reversed_rows = layout.rows[::-1]  # their lengths: 64, 512, 3, 900
    rows.copy_(layout.tensor(reversed_rows))
    for new_lens in ([64, 512, 3, 900], [17, 1, 2, 640]):
        q.copy_(torch.randn(q.shape, device=DEVICE))
        seq_lens.copy_(layout.tensor(new_lens))
        out.fill_(float("nan"))
        graph.replay()
        expected = ref.paged_attention_reference(
            q,
            layout.k_buffer,
            layout.v_buffer,
            layout.req_to_token,
            reversed_rows,
            new_lens,
            [1] * 4,
            head_dim**-0.5,
        )
        assert rel_err(out, expected) < ATTENTION_TOL[dtype]


def test_store_kv_writes_exactly_the_given_slots():
    num_kv_heads, head_dim = 3, 64
    k_buffer = torch.randn(100, num_kv_heads, head_dim, device=DEVICE, dtype=torch.bfloat16)
    v_buffer = torch.randn_like(k_buffer)
    expected_k, expected_v = k_buffer.clone(), v_buffer.clone()
    loc = torch.tensor([5, 99, 0, 42], device=DEVICE)
    # k as a strided slice of a wider tensor, like the model's fused qkv output.
    k = torch.randn(4, 2 * num_kv_heads, head_dim, device=DEVICE, dtype=torch.bfloat16)[
        :, num_kv_heads:
    ]
    v = torch.randn(4, num_kv_heads, head_dim, device=DEVICE, dtype=torch.bfloat16)
    store_kv(k_buffer, v_buffer, loc, k, v)
    ref.store_kv_reference(expected_k, expected_v, loc, k, v)
    assert torch.equal(k_buffer, expected_k) and torch.equal(v_buffer, expected_v)


def test_gather_kv_indices_concatenates_each_sequences_slots():
    layout = PagedLayout([5, 1, 1200, 77], 1, 64, torch.bfloat16, seed=4)
    total = sum(layout.seq_lens)
    out = torch.full((total + 10,), -1, dtype=torch.int32, device=DEVICE)
    gather_kv_indices(
        layout.req_to_token, layout.tensor(layout.rows), layout.tensor(layout.seq_lens), out
    )
    expected = ref.gather_kv_indices_reference(layout.req_to_token, layout.rows, layout.seq_lens)
    assert torch.equal(out[:total], expected)
    assert (out[total:] == -1).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("hidden", [576, 896, 4096])
def test_rmsnorm_with_and_without_residual(dtype, hidden):
    x = torch.randn(37, hidden, device=DEVICE).to(dtype)
    weight = (1 + 0.1 * torch.randn(hidden, device=DEVICE)).to(dtype)
    residual = torch.randn(37, hidden, device=DEVICE).to(dtype)
    expected, expected_sum = ref.rmsnorm_reference(x, weight, 1e-5, residual)
    out = rmsnorm(x, weight, 1e-5, residual)  # residual becomes x + residual
    assert rel_err(out, expected) < ELEMENTWISE_TOL[dtype]
    assert rel_err(residual, expected_sum) < ELEMENTWISE_TOL[dtype]
    assert (
        rel_err(rmsnorm(x, weight, 1e-5), ref.rmsnorm_reference(x, weight, 1e-5)[0])
        < (ELEMENTWISE_TOL[dtype])
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_silu_and_mul(dtype):
    gate_up = torch.randn(29, 2 * 14336, device=DEVICE).to(dtype)
    out = silu_and_mul(gate_up)
    assert out.shape == (29, 14336)
    assert rel_err(out, ref.silu_and_mul_reference(gate_up)) < ELEMENTWISE_TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("heads", HEAD_SHAPES)
def test_rotary_on_a_strided_view(dtype, heads):
    num_heads, num_kv_heads, head_dim = heads
    qkv = torch.randn(19, num_heads + 2 * num_kv_heads, head_dim, device=DEVICE).to(dtype)
    qk = qkv[:, : num_heads + num_kv_heads]  # what the model rotates
    angles = torch.rand(19, 1, head_dim // 2, device=DEVICE) * 6.3
    cos = torch.cat((angles.cos(), angles.cos()), -1).to(dtype)
    sin_signed = torch.cat((-angles.sin(), angles.sin()), -1).to(dtype)
    out = apply_rotary(qk, cos, sin_signed)
    expected = ref.rotary_reference(qk, cos, sin_signed)
    assert rel_err(out, expected) < ELEMENTWISE_TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(6144, 4096), (37, 300), (896, 4864)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_gemv_matches_linear(dtype, shape, with_bias):
    n, k = shape
    x = torch.randn(1, k, device=DEVICE).to(dtype)
    weight = torch.randn(n, k, device=DEVICE).to(dtype)
    bias = torch.randn(n, device=DEVICE).to(dtype) if with_bias else None
    out = gemv(x, weight, bias)
    assert out.shape == (1, n)
    assert rel_err(out, ref.linear_reference(x, weight, bias)) < ELEMENTWISE_TOL[dtype] + 1e-6


@pytest.mark.parametrize(
    "config",
    [
        GemvConfig(4, 1024, 4, 3, evict_first=True),
        GemvConfig(8, 512, 4, 2),
        GemvConfig(32, 256, 8, 4, evict_first=True),
    ],
)
@pytest.mark.parametrize("shape", [(4096, 14336), (37, 300)])
def test_gemv_configs_compute_the_same_product(config, shape):
    """Tiles that do not divide the shape, eviction hints."""
    n, k = shape
    x = torch.randn(1, k, device=DEVICE).to(torch.bfloat16)
    weight = torch.randn(n, k, device=DEVICE).to(torch.bfloat16)
    out = gemv(x, weight, config=config)
    assert rel_err(out, ref.linear_reference(x, weight)) < ELEMENTWISE_TOL[torch.bfloat16]


def test_pdl_chain_replays_in_a_cuda_graph():
    """A decode layer's MLP as our kernels run it (norm, GEMV, SiLU-and-mul, GEMV, norm with
    the residual), each kernel reading its predecessor's output, launched with PDL where the
    GPU has it, captured once and replayed on new inputs: every kernel must see the writes of
    the one before (a missing wait shows as stale or partial rows)."""
    hidden, intermediate, eps = 4096, 14336, 1e-5
    dtype = torch.bfloat16
    norm_weight = (1 + 0.1 * torch.randn(hidden, device=DEVICE)).to(dtype)
    gate_up_weight = (torch.randn(2 * intermediate, hidden, device=DEVICE) / 64).to(dtype)
    down_weight = (torch.randn(hidden, intermediate, device=DEVICE) / 120).to(dtype)
    x = torch.randn(1, hidden, device=DEVICE, dtype=dtype)
    residual = torch.randn_like(x)

    def ours() -> torch.Tensor:
        h = rmsnorm(x, norm_weight, eps)
        h = gemv(silu_and_mul(gemv(h, gate_up_weight)), down_weight)
        return rmsnorm(h, norm_weight, eps, residual)

    def reference(residual_before: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = ref.rmsnorm_reference(x, norm_weight, eps)[0]
        gate_up = ref.linear_reference(h, gate_up_weight)
        h = ref.linear_reference(ref.silu_and_mul_reference(gate_up), down_weight)
        return ref.rmsnorm_reference(h, norm_weight, eps, residual_before)

    ours()  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = ours()
    for _ in range(3):
        x.normal_()
        residual.normal_()
        expected, expected_sum = reference(residual.clone())
        out.fill_(float("nan"))
        graph.replay()
        assert rel_err(out, expected) < 2e-2
        assert rel_err(residual, expected_sum) < 2e-2
