"""The compiled CPU paged-attention kernel on the default model's attention shapes (9 query
heads, 3 KV heads, head_dim 64, bfloat16 or float32 K/V): decode with every layer's K/V in cache
(one layer's buffers reused), decode with 30 layers' distinct K/V streaming from DRAM (what a
decode step sees), and a prefill of prompts after a cached prefix (``--prefix-len``; 576 is a
``generated-shared-prefix`` question over its system prompt) on the FMA kernel and, where the
CPU has AMX, with the prompt rows on tiles (kernels/cpu_amx_attention.py), side by side. Best of
``--rounds``.

    python benchmarks/bench_cpu_attention.py [--batch 32] [--context 320] [--rounds 8]
    python benchmarks/bench_cpu_attention.py --prefill-prompts 8 --prefill-len 64 --prefix-len 576
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from radixlm.kernels.cpu_amx_attention import load_cpu_amx_prompt_attention
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
    generated = torch.zeros(batch, dtype=torch.int64)  # decode rows: no prompt rows
    q = torch.randn(batch, HEADS, HEAD_DIM)
    layers = [
        tuple(torch.randn(batch * context, KV_HEADS, HEAD_DIM).to(dtype) for _ in "kv")
        for _ in range(LAYERS)
    ]
    k, v = layers[0]
    hot = best_seconds(lambda: attention(q, k, v, slots, seq_lens, ones, generated, 0.125), rounds)

    def step() -> None:
        for k_layer, v_layer in layers:
            attention(q, k_layer, v_layer, slots, seq_lens, ones, generated, 0.125)

    return hot, best_seconds(step, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--context", type=int, default=320)
    parser.add_argument("--prefill-prompts", type=int, default=8)
    parser.add_argument("--prefill-len", type=int, default=256)
    parser.add_argument("--prefix-len", type=int, default=0, help="cached keys before each prompt")
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
    prompts, length, prefix = args.prefill_prompts, args.prefill_len, args.prefix_len
    k = torch.randn(prefix + prompts * length, KV_HEADS, HEAD_DIM).bfloat16()
    v = torch.randn(prefix + prompts * length, KV_HEADS, HEAD_DIM).bfloat16()
    lens, news = torch.full((prompts,), prefix + length), torch.full((prompts,), length)
    q = torch.randn(prompts * length, HEADS, HEAD_DIM)
    # Every prompt after the same cached prefix slots, then its own.
    own = torch.arange(prefix, prefix + prompts * length).view(prompts, length)
    prompt_slots = torch.cat([torch.arange(prefix).expand(prompts, prefix), own], dim=1)
    fma_only = torch.zeros(prompts, dtype=torch.int64)
    flops = prompts * length * (prefix + (length + 1) / 2) * HEADS * HEAD_DIM * 4
    shape = f"bfloat16 prefill {prompts} x {length} after {prefix} cached"
    fma = best_seconds(lambda: attention(q, k, v, prompt_slots, lens, news, fma_only, 0.125), 5)
    print(f"{shape}, FMA kernel: {fma * 1e3:.2f} ms a layer, {flops / fma / 1e9:.1f} GFLOP/s")
    prompt_attention = load_cpu_amx_prompt_attention(torch.bfloat16, HEAD_DIM)
    if prompt_attention is None:
        return

    def on_tiles() -> None:
        out = attention(q, k, v, prompt_slots, lens, news, news, 0.125)
        prompt_attention(q, k, v, prompt_slots, lens, news, news, out, 0.125)

    amx = best_seconds(on_tiles, 5)
    print(
        f"{shape}, prompt rows on AMX tiles: {amx * 1e3:.2f} ms a layer, "
        f"{flops / amx / 1e9:.1f} GFLOP/s ({fma / amx:.2f}x)"
    )


if __name__ == "__main__":
    main()
