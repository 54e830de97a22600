"""int4 mode's matmuls on an AMX CPU, weights streaming from DRAM as in a decode step: the
Q4_1 tiles dequantized on the way (``amx_q4_1_matmul``) vs the bfloat16 copy (``amx_matmul``)
vs the AVX2 int4 kernel (int8 activations; few rows only). 30 layers of the default model's
four matmul shapes, distinct random weights per layer (~60 MB of 4-bit blocks, ~210 MB of
bf16), so each pass reads its weights from memory, not cache. Reports the best of
``--rounds`` passes over all layers, per row count; sets ``AMX_KERNEL_MAX_ROWS``.

    python benchmarks/bench_amx_q4_1.py [--rows 1,2,4,8,16,32,64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from radixlm.kernels.cpu_amx_matmul import load_cpu_amx_matmul, pack_amx_q4_1
from radixlm.kernels.cpu_quant_matmul import load_cpu_quant_matmul, pack_q4_1

# (out_features, in_features): fused q/k/v, o_proj, fused gate/up, down_proj.
SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)]
LAYERS = 30
INT4_KERNEL_MAX_ROWS = 8  # beyond this the AVX2 kernel is several times slower; not timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="1,2,4,8,16,32,64")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    amx, int4 = load_cpu_amx_matmul(), load_cpu_quant_matmul()
    assert amx is not None and int4 is not None, "needs a CPU with AMX and a C++ compiler"
    generator = torch.Generator().manual_seed(0)
    weights = []  # per layer and shape: (out, in, AMX tiles, bf16 copy, Q4_1 blocks)
    for _ in range(LAYERS):
        for out_features, in_features in SHAPES:
            blocks = pack_q4_1(torch.randn(out_features, in_features, generator=generator) * 0.05)
            tiles = pack_amx_q4_1(*blocks)
            copy = amx.amx_q4_1_to_bf16(*tiles)
            weights.append((out_features, in_features, tiles, copy, blocks))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; ms per pass, best round")
    print(f"{'rows':>5} {'q4_1 fused':>11} {'bf16 copy':>10} {'AVX2 int4':>10}")
    for rows in (int(r) for r in args.rows.split(",")):
        inputs = {k: torch.randn(rows, k, generator=generator) for _, k in SHAPES}
        # (x, out_features, AMX tiles, bf16 copy, Q4_1 blocks) -> x @ W^T
        kinds: dict[str, Callable[[torch.Tensor, int, tuple, torch.Tensor, tuple], object]] = {
            "fused": lambda x, n, tiles, copy, blocks: amx.amx_q4_1_matmul(x, *tiles, n),
            "copy": lambda x, n, tiles, copy, blocks: amx.amx_matmul(x, copy, n),
        }
        if rows <= INT4_KERNEL_MAX_ROWS:
            kinds["int4"] = lambda x, n, tiles, copy, blocks: int4.q4_1_matmul(x, *blocks)
        best = dict.fromkeys(kinds, float("inf"))
        for round_ in range(args.rounds + 1):  # round 0 warms up
            for kind, matmul in kinds.items():
                start = time.perf_counter()
                for out_features, in_features, tiles, copy, blocks in weights:
                    matmul(inputs[in_features], out_features, tiles, copy, blocks)
                if round_:
                    best[kind] = min(best[kind], time.perf_counter() - start)
        cells = [f"{best[k] * 1e3:.2f}" if k in best else "-" for k in ("fused", "copy", "int4")]
        print(f"{rows:>5} {cells[0]:>11} {cells[1]:>10} {cells[2]:>10}", flush=True)


if __name__ == "__main__":
    main()
