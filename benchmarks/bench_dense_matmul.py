"""CPU matmuls on the default model's linear shapes: our packed kernel vs oneDNN on its packed
weights (what the linears ran before) vs ``F.linear`` (re-packing the weight every call).
float32: kernels/cpu_dense_matmul.py; ``--dtype bfloat16``: bfloat16 weights on
kernels/cpu_amx_matmul.py (CPUs with AMX) or kernels/cpu_bf16_matmul.py (AVX512-BF16 without
AMX), float32 activations in and out as int4 mode passes them (oneDNN and F.linear get them
cast to bfloat16 and back), beside our float32 kernel on the same weights (``ours f32``).

The rounds interleave the three, and each reports its best round, so the VM's drifting speed
falls on all of them alike. GFLOP/s = 2 * rows * in * out / seconds.

    python benchmarks/bench_dense_matmul.py
    python benchmarks/bench_dense_matmul.py --rows 1,8,32,512 --rounds 9
    python benchmarks/bench_dense_matmul.py --dtype bfloat16
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from radixlm.runtime.layers.dense_cpu import (
    KernelCpuWeight,
    bf16_dot_cpu_weight,
    native_bf16_matmul,
    pack_cpu_weight,
)

# SmolLM2-135M: fused q/k/v, o_proj, fused gate/up, down_proj, the LM head.
SHAPES = {"qkv": (576, 960), "o": (576, 576), "gate_up": (576, 3072), "down": (1536, 576),
          "lm_head": (576, 49152)}  # fmt: skip


def seconds_per_call(fn: Callable[[], torch.Tensor], calls: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="1,8,32,64,512")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.dtype} weights; "
        "GFLOP/s, best round"
    )
    print(
        f"{'rows':>5} {'layer':>8} {'ours':>6} {'oneDNN':>7} {'F.linear':>9} {'vs oneDNN':>10}"
        f" {'ours f32':>9}"
    )
    generator = torch.Generator().manual_seed(0)
    for rows in (int(r) for r in args.rows.split(",")):
        for name, (in_features, out_features) in SHAPES.items():
            weight = torch.randn(out_features, in_features, generator=generator)
            x = torch.randn(rows, in_features, generator=generator)
            rate = best_rates(x, weight.to(dtype), args.rounds)
            print(
                f"{rows:>5} {name:>8} {rate['ours']:>6.0f} {rate['onednn']:>7.0f} "
                f"{rate['f_linear']:>9.0f} {rate['ours'] / rate['onednn']:>9.2f}x"
                f" {rate.get('ours_f32', rate['ours']):>9.0f}",
                flush=True,
            )


def our_matmul(weight: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Our kernel for the weight's dtype (what the linears run), on the weight packed once."""
    packed = pack_cpu_weight(weight)
    if weight.dtype == torch.bfloat16 and not native_bf16_matmul():
        packed = bf16_dot_cpu_weight(weight)
    assert isinstance(packed, KernelCpuWeight), (
        "our kernel does not build here (float32: a C++ compiler and AVX2; bfloat16: AMX tiles "
        "or AVX512-BF16)"
    )
    return packed.matmul


def best_rates(x: torch.Tensor, weight: torch.Tensor, rounds: int):
    """GFLOP/s of each candidate's best round, rounds interleaved."""
    out_features, dtype = weight.shape[0], weight.dtype
    ours = our_matmul(weight)
    onednn = torch.ops.mkldnn._reorder_linear_weight(weight, None)
    candidates: dict[str, Callable[[], torch.Tensor]] = {
        "ours": lambda: ours(x),
        "onednn": lambda: torch.ops.mkldnn._linear_pointwise(
            x.to(dtype), onednn, None, "none", [], ""
        ).float(),
        "f_linear": lambda: F.linear(x.to(dtype), weight).float(),
    }
    if dtype != torch.float32:
        ours_f32 = our_matmul(weight.float())
        candidates["ours_f32"] = lambda: ours_f32(x)
    tolerance = 1e-4 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(
        candidates["ours"](), candidates["f_linear"](), rtol=tolerance, atol=tolerance * 10
    )
    flops = 2 * x.shape[0] * x.shape[1] * out_features
    calls = max(3, int(3e8 / flops))
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(rounds):
        for key, fn in candidates.items():
            best[key] = min(best[key], seconds_per_call(fn, calls))
    return {key: flops / seconds / 1e9 for key, seconds in best.items()}


if __name__ == "__main__":
    main()
