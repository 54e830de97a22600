"""Where a batch-1 decode step's time goes: host vs GPU, and GPU time per kernel kind.

Builds a dummy-weight runner, prefills one sequence, then
  * times whole decode steps (host preparation + graph replay + argmax, synchronised),
  * times the captured graph's replay alone with CUDA events (GPU time of the step),
  * profiles one eager step with torch.profiler and groups GPU kernel time by kernel name,
    so the matmuls' share can be set against the bytes they must read (PDL off, so that each
    kernel's time is its own),
  * with ``--variants``, re-captures the graph and times its replay with PDL off and on, with
    one GEMV config for every shape against the per-shape table (with and without its
    evict-first hint) and against ``--gemv-configs`` (the gemv rows of
    bench_gpu_kernels.py's results), in three interleaved rounds.

    python benchmarks/bench_gpu_profile.py --model-path llama-3.1-8b --attention-backend triton
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict

import torch
from bench_one_batch import measure_copy_bandwidth, resolved_for, weight_bytes_per_step

from radixlm.kernels import gemv as gemv_module
from radixlm.kernels import pdl
from radixlm.runtime.cuda_graph_runner import CudaGraphRunner
from radixlm.runtime.forward_batch import ForwardBatch, ForwardMode, build_forward_batch
from radixlm.runtime.model_config import ModelConfig
from radixlm.runtime.model_runner import ModelRunner

# Substrings of cuBLAS / CUTLASS matmul kernel names (Hopper cuBLAS names many "nvjet_*").
GEMM_NAMES = ("gemm", "gemv", "nvjet", "xmma", "cutlass")


def decode_batch(runner: ModelRunner, row: int, slots: list[int], token: int) -> ForwardBatch:
    seq_len = len(slots)
    return build_forward_batch(
        ForwardMode.DECODE, [[token]], [seq_len - 1], [row], [slots[-1]], device=runner.device
    )


def replay_ms(graph: torch.cuda.CUDAGraph, replays: int) -> float:
    """Median GPU time of one replay (CUDA events around each)."""
    times = []
    for _ in range(replays):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end))
    return statistics.median(times)


def gemv_configs_from(path: str) -> dict[tuple[int, int], gemv_module.GemvConfig]:
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return {
        (row["n"], row["k"]): gemv_module.GemvConfig(*row["triton_config"])
        for row in rows
        if row["kernel"] == "gemv"
    }


def time_variants(runner: ModelRunner, batch: ForwardBatch, tuned_path: str | None) -> None:
    """Graph replay of one decode step under each kernel setting, each captured afresh."""
    table = gemv_module.TUNED

    def table_with(**change) -> dict:
        return {shape: cfg._replace(**change) for shape, cfg in table.items()}

    # name: (PDL, per-shape configs; other shapes take the default)
    variants = {
        "pdl off, one config": (False, {}),
        "pdl on, one config": (True, {}),
        "pdl off, per-shape table": (False, table),
        "pdl on, per-shape table": (True, table),
        "pdl on, table without evict-first": (True, table_with(evict_first=False)),
    }
    if tuned_path:
        variants["pdl on, sweep's best"] = (True, gemv_configs_from(tuned_path))
    results: dict[str, list[float]] = defaultdict(list)
    num_heads = runner.model_config.num_heads
    for _ in range(3):
        for name, (enabled, configs) in variants.items():
            pdl.ENABLED, gemv_module.TUNED = enabled, configs
            runner.cuda_graph_runner = None
            runner.cuda_graph_runner = CudaGraphRunner(
                runner.model, runner.attn_backend, num_heads, 1, runner.device
            )
            runner.forward(batch)  # fills the graph's inputs
            results[name].append(replay_ms(runner.cuda_graph_runner.graphs[1], 300))
            print(f"{results[name][-1]:7.3f} ms  {name}", flush=True)
    pdl.ENABLED, gemv_module.TUNED = True, table
    medians = {name: statistics.median(times) for name, times in results.items()}
    print(json.dumps({"graph_replay_ms": results, "median_of_rounds": medians}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", default="llama-3.1-8b")
    parser.add_argument("--attention-backend", default="triton")
    parser.add_argument("--input-len", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--variants", action="store_true", help="PDL and GEMV config variants")
    parser.add_argument("--gemv-configs", default=None, help="bench_gpu_kernels.py results")
    args = parser.parse_args()
    resolved = resolved_for(args.model_path, "dummy")
    config = ModelConfig.from_dir(resolved.model_dir)
    total = args.input_len + args.steps + 8
    runner = ModelRunner(
        config,
        resolved,
        device="cuda",
        dtype=torch.bfloat16,
        attention_backend=args.attention_backend,
        max_total_tokens=2 * total,
        max_running_requests=1,
        context_len=total,
        cuda_graph_max_bs=1,
    )
    row = runner.req_to_token_pool.alloc()
    slots = runner.token_allocator.alloc(total)
    runner.req_to_token_pool.write(row, 0, slots)
    prefill = build_forward_batch(
        ForwardMode.EXTEND,
        [[1] * args.input_len],
        [0],
        [row],
        slots[: args.input_len],
        device="cuda",
    )
    token = int(runner.forward(prefill).argmax())
    seq = args.input_len
    step_ms, replay_ms = [], []
    graph = runner.cuda_graph_runner.graphs[1]
    for _ in range(args.steps):
        seq += 1
        batch = decode_batch(runner, row, slots[:seq], token)
        torch.cuda.synchronize()
        start = time.perf_counter()
        token = int(runner.forward(batch).argmax())  # .item() syncs
        step_ms.append(1e3 * (time.perf_counter() - start))
        # The same step's graph again, GPU time only (it rewrites the same KV slot).
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        replay_ms.append(begin.elapsed_time(end))

    # One eager step under the profiler (same kernels as the graph, launched one by one).
    graph_runner, runner.cuda_graph_runner = runner.cuda_graph_runner, None
    seq += 1
    batch = decode_batch(runner, row, slots[:seq], token)
    pdl.ENABLED = False
    runner.forward(batch)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        runner.forward(batch)
        torch.cuda.synchronize()
    pdl.ENABLED = True
    runner.cuda_graph_runner = graph_runner
    kernel_us: dict[str, float] = defaultdict(float)
    kernel_count: dict[str, int] = defaultdict(int)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            kernel_us[event.name[:80]] += event.device_time
            kernel_count[event.name[:80]] += 1
    bandwidth = measure_copy_bandwidth()
    weights = weight_bytes_per_step(runner)
    gemm_us = sum(
        us for name, us in kernel_us.items() if any(k in name.lower() for k in GEMM_NAMES)
    )
    summary = {
        "model": args.model_path,
        "attention_backend": args.attention_backend,
        "step_ms_median": statistics.median(step_ms),
        "graph_replay_ms_median": statistics.median(replay_ms),
        "host_ms_per_step": statistics.median(step_ms) - statistics.median(replay_ms),
        "eager_kernels": sum(kernel_count.values()),
        "eager_kernel_ms": sum(kernel_us.values()) / 1e3,
        "gemm_ms": gemm_us / 1e3,
        "weights_floor_ms": 1e3 * weights / bandwidth,
        "gemm_pct_of_copy_bandwidth": 100 * (weights / bandwidth) / (gemm_us / 1e6),
        "copy_bandwidth_tb_s": bandwidth / 1e12,
    }
    print(json.dumps(summary))
    for name, us in sorted(kernel_us.items(), key=lambda kv: -kv[1])[:16]:
        print(f"{us:9.1f} us {kernel_count[name]:4d}x  {name}")
    if args.variants:
        time_variants(runner, batch, args.gemv_configs)


if __name__ == "__main__":
    main()
