"""The compiled CPU paged-attention kernel on the default model's attention shapes (9 query
heads, 3 KV heads, head_dim 64, bfloat16 or float32 K/V): decode with every layer's K/V in cache
(one layer's buffers reused), decode with 30 layers' distinct K/V streaming from DRAM (what a
decode step sees), and a prefill of whole prompts. Best of ``--rounds``.

    python benchmarks/bench_cpu_attention.py [--batch 32] [--context 320] [--rounds 8]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from radixlm.kernels.cpu_paged_attention import load_cpu_paged_attention

HEADS, KV_HEADS, HEAD_DIM, LAYERS = 9, 3, 64, 30


def best_seconds(fn: Callable[[], object], rounds: int) -> float:
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def decode_seconds(attention, dtype: torch.dtype, batch: int, context: int, rounds: int):
    """(one layer with its K/V in cache, LAYERS layers' distinct K/V from memory) per call."""
    slots = torch.arange(batch * context).view(batch, context)
    seq_lens, ones = torch.full((batch,), context), torch.ones(batch, dtype=torch.int64)
    q = torch.randn(batch, HEADS, HEAD_DIM)
    layers = [
        tuple(torch.randn(batch * context, KV_HEADS, HEAD_DIM).to(dtype) for _ in "kv")
        for _ in range(LAYERS)
    ]
    k, v = layers[0]
    hot = best_seconds(lambda: attention(q, k, v, slots, seq_lens, ones, 0.125), rounds)

    def step() -> None:
        for k_layer, v_layer in layers:
            attention(q, k_layer, v_layer, slots, seq_lens, ones, 0.125)

    return hot, best_seconds(step, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--context", type=int, default=320)
    parser.add_argument("--prefill-prompts", type=int, default=8)
    parser.add_argument("--prefill-len", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    attention = load_cpu_paged_attention()
    assert attention is not None, "the kernel needs a C++ compiler and AVX2 + FMA"
    batch, context = args.batch, args.context
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; best of {args.rounds}")
    for dtype in (torch.bfloat16, torch.float32):
        hot, streamed = decode_seconds(attention, dtype, batch, context, args.rounds)
        size = torch.tensor([], dtype=dtype).element_size()
        gb_per_step = 2 * batch * context * KV_HEADS * HEAD_DIM * size * LAYERS / 1e9
        print(
            f"{str(dtype)[6:]:>8} decode {batch} x {context}: one layer in cache "
            f"{hot * 1e3:.3f} ms; {LAYERS} layers from memory {streamed * 1e3:.1f} ms "
            f"({gb_per_step / streamed:.1f} GB/s)",
            flush=True,
        )
    prompts, length = args.prefill_prompts, args.prefill_len
    k = torch.randn(prompts * length, KV_HEADS, HEAD_DIM).bfloat16()
    v = torch.randn(prompts * length, KV_HEADS, HEAD_DIM).bfloat16()
    lens = torch.full((prompts,), length)
    q = torch.randn(prompts * length, HEADS, HEAD_DIM)
    prompt_slots = torch.arange(prompts * length).view(prompts, length)
    seconds = best_seconds(lambda: attention(q, k, v, prompt_slots, lens, lens, 0.125), 5)
    flops = prompts * length * (length + 1) / 2 * HEADS * HEAD_DIM * 4
    print(
        f"bfloat16 prefill {prompts} x {length}: {seconds * 1e3:.2f} ms a layer, "
        f"{flops / seconds / 1e9:.1f} GFLOP/s"
    )


if __name__ == "__main__":
    main()
