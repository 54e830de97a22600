"""Writing a pass's new K/V into a bfloat16 pool on CPU, as every layer does: the compiled
``store_kv`` (kernels/cpu_layer_ops.py) beside the torch path it replaces (``index_copy_`` of
``.to(bfloat16)``), in one run. The default model's shapes: 3 KV heads x 64, K and V strided
views of the fused qkv row, 30 layers; a decode step's 32 tokens and a 512-token prompt chunk.
Best of ``--rounds``.

    python benchmarks/bench_cpu_kv_store.py [--rounds 20]
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from bench_cpu_attention import best_seconds

from radixlm.kernels.cpu_layer_ops import load_cpu_layer_ops

KV_HEADS, HEAD_DIM, LAYERS, SLOTS = 3, 64, 30, 70_000


Buffers = list[tuple[torch.Tensor, torch.Tensor]]


def store_compiled(ops, buffers: Buffers, loc: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    for k_buffer, v_buffer in buffers:
        ops.store_kv(k_buffer, v_buffer, loc, k, v)


def store_with_torch(buffers: Buffers, loc: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    for k_buffer, v_buffer in buffers:
        k_buffer.index_copy_(0, loc, k.to(torch.bfloat16))
        v_buffer.index_copy_(0, loc, v.to(torch.bfloat16))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    ops = load_cpu_layer_ops()
    assert ops is not None, "no C++ compiler for the CPU kernels"
    width = KV_HEADS * HEAD_DIM
    buffers = [
        tuple(torch.zeros(SLOTS, KV_HEADS, HEAD_DIM, dtype=torch.bfloat16) for _ in "kv")
        for _ in range(LAYERS)
    ]
    print(f"{'tokens':>6} {'store_kv ms':>12} {'torch ms':>9} {'ratio':>6}  ({LAYERS} layers)")
    for tokens in (32, 512):
        qkv = torch.randn(tokens, 3 * width + width * 2)  # [q (3 x width) | k | v]
        k = qkv[:, 3 * width : 4 * width].view(tokens, KV_HEADS, HEAD_DIM)
        v = qkv[:, 4 * width :].view(tokens, KV_HEADS, HEAD_DIM)
        loc = torch.randperm(SLOTS, generator=torch.Generator().manual_seed(0))[:tokens]
        ours = best_seconds(partial(store_compiled, ops, buffers, loc, k, v), args.rounds)
        theirs = best_seconds(partial(store_with_torch, buffers, loc, k, v), args.rounds)
        print(f"{tokens:>6} {ours * 1e3:>12.2f} {theirs * 1e3:>9.2f} {theirs / ours:>5.1f}x")


if __name__ == "__main__":
    main()
