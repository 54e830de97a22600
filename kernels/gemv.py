"""Triton matrix-vector product for one-token passes (batch-1 decode): ``y = W x (+ b)``.

At one token a linear layer is a pure weight stream: every byte of W is read once and used
for two flops. This kernel gives each program a block of output rows and walks K with wide,
coalesced loads, keeping several tiles in flight. Launched with PDL (see pdl.py), its
programs are resident before the previous kernel (a norm, the attention, SiLU-and-mul) ends.
Reference: ``kernels.reference.linear_reference``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from radixlm.kernels.pdl import pdl_options, start_after_previous


class GemvConfig(NamedTuple):
    block_n: int  # output rows per program
    block_k: int  # columns per loop step
    num_warps: int
    num_stages: int
    # Weight loads marked evict-first: each weight line is read once a step, so L2 is better
    # spent on what is read again (x, the activations between kernels).
    evict_first: bool = False


DEFAULT_CONFIG = GemvConfig(16, 512, 8, 3)
# Per-shape (n, k) configs: the best of benchmarks/bench_gpu_kernels.py's sweep on an H100
# (each GEMV after a norm, launched with PDL; docs/gpu.md). Llama-3.1-8B's linears.
TUNED: dict[tuple[int, int], GemvConfig] = {
    (6144, 4096): GemvConfig(8, 1024, 8, 3, evict_first=True),  # q/k/v
    (4096, 4096): GemvConfig(16, 1024, 8, 3, evict_first=True),  # o
    (28672, 4096): GemvConfig(8, 1024, 8, 3, evict_first=True),  # gate/up
    (4096, 14336): GemvConfig(16, 1024, 8, 3, evict_first=True),  # down
    (128256, 4096): GemvConfig(8, 1024, 8, 3, evict_first=True),  # LM head
}


def config_for(n: int, k: int) -> GemvConfig:
    return TUNED.get((n, k), DEFAULT_CONFIG)


@triton.jit
def _gemv_kernel(
    X,  # (K,) input row
    W,  # (N, K) weight, K contiguous
    Bias,  # (N,) or unused
    Y,  # (N,) output
    N,
    K,
    stride_wn,
    HAS_BIAS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    EVICTION: tl.constexpr,  # eviction policy of the weight loads
    PDL: tl.constexpr,
):
    start_after_previous(PDL)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for k_start in range(0, K, BLOCK_K):
        offs_k = k_start + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        x = tl.load(X + offs_k, mask=mask_k, other=0.0)
        w = tl.load(
            W + offs_n[:, None].to(tl.int64) * stride_wn + offs_k[None, :],
            mask=mask_n[:, None] & mask_k[None, :],
            other=0.0,
            eviction_policy=EVICTION,
        )
        acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
    y = tl.sum(acc, 1)
    if HAS_BIAS:
        y += tl.load(Bias + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    tl.store(Y + offs_n, y.to(Y.dtype.element_ty), mask=mask_n)


def gemv_pays(n: int, k: int) -> bool:
    """Whether one row of ``(n, k)`` weights is faster here than in cuBLAS.

    Measured on an H100 (benchmarks/bench_gpu_kernels.py, bench_one_batch.py): yes for
    Llama-3.1-8B's shapes (n >= 4096: at least two 16-row programs per SM) and for SmolLM2's
    small ones (k <= 2048: a few tiles, one launch against cuBLAS's split-K pair). Not for few
    tall rows (Qwen2.5-0.5B's down projection, 896 x 4864): too few programs stream too long,
    while cuBLAS splits K.
    """
    return n >= 4096 or k <= 2048


def gemv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    config: GemvConfig | None = None,
) -> torch.Tensor:
    """x: (1, K), weight: (N, K) -> (1, N), like ``F.linear`` for a single row."""
    assert x.shape[0] == 1 and x.stride(-1) == 1 and weight.stride(1) == 1
    n, k = weight.shape
    config = config or config_for(n, k)
    y = torch.empty((1, n), dtype=x.dtype, device=x.device)
    _gemv_kernel[(triton.cdiv(n, config.block_n),)](
        x,
        weight,
        bias if bias is not None else y,
        y,
        n,
        k,
        weight.stride(0),
        HAS_BIAS=bias is not None,
        BLOCK_N=config.block_n,
        BLOCK_K=min(config.block_k, triton.next_power_of_2(k)),
        EVICTION="evict_first" if config.evict_first else "",
        num_warps=config.num_warps,
        num_stages=config.num_stages,
        **pdl_options(x.device),
    )
    return y
