"""Float32 CPU matmuls on the default model's linear shapes: our packed kernel
(kernels/cpu_dense_matmul.py) vs oneDNN on its packed weights (what the linears ran before) vs
``F.linear`` (MKL, re-packing the weight every call).

The rounds interleave the three, and each reports its best round, so the VM's drifting speed
falls on all of them alike. GFLOP/s = 2 * rows * in * out / seconds.

    python benchmarks/bench_dense_matmul.py
    python benchmarks/bench_dense_matmul.py --rows 1,8,32,512 --rounds 9
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from types import ModuleType

import torch
import torch.nn.functional as F

from radixlm.kernels.cpu_dense_matmul import load_cpu_dense_matmul, pack_dense_weight

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
    args = parser.parse_args()
    kernels = load_cpu_dense_matmul()
    assert kernels is not None, "the kernel needs a C++ compiler and AVX2 + FMA"
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; GFLOP/s, best round")
    print(f"{'rows':>5} {'layer':>8} {'ours':>6} {'oneDNN':>7} {'F.linear':>9} {'vs oneDNN':>10}")
    generator = torch.Generator().manual_seed(0)
    for rows in (int(r) for r in args.rows.split(",")):
        for name, (in_features, out_features) in SHAPES.items():
            weight = torch.randn(out_features, in_features, generator=generator)
            x = torch.randn(rows, in_features, generator=generator)
            rate = best_rates(kernels, x, weight, args.rounds)
            print(
                f"{rows:>5} {name:>8} {rate['ours']:>6.0f} {rate['onednn']:>7.0f} "
                f"{rate['f_linear']:>9.0f} {rate['ours'] / rate['onednn']:>9.2f}x",
                flush=True,
            )


def best_rates(kernels: ModuleType, x: torch.Tensor, weight: torch.Tensor, rounds: int):
    """GFLOP/s of each candidate's best round, rounds interleaved."""
    out_features = weight.shape[0]
    ours = pack_dense_weight(weight)
    onednn = torch.ops.mkldnn._reorder_linear_weight(weight, None)
    candidates: dict[str, Callable[[], torch.Tensor]] = {
        "ours": lambda: kernels.dense_matmul(x, ours, out_features),
        "onednn": lambda: torch.ops.mkldnn._linear_pointwise(x, onednn, None, "none", [], ""),
        "f_linear": lambda: F.linear(x, weight),
    }
    torch.testing.assert_close(candidates["ours"](), F.linear(x, weight), rtol=1e-4, atol=1e-3)
    flops = 2 * x.shape[0] * x.shape[1] * out_features
    calls = max(3, int(3e8 / flops))
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(rounds):
        for key, fn in candidates.items():
            best[key] = min(best[key], seconds_per_call(fn, calls))
    return {key: flops / seconds / 1e9 for key, seconds in best.items()}


if __name__ == "__main__":
    main()
