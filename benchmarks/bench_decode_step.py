"""Times ModelRunner decode steps (CPU by default) at several batch sizes.

Each sequence starts with ``--context-len`` tokens already in the KV pool (their K/V values do
not change the timing, so no prefill is run), then every step decodes one token per sequence.
Prints the median step time and the decode throughput per batch size, next to the memory
floor measured on the spot: a decode step must read every weight and every sequence's K/V
once, so (weight bytes + KV bytes) / read bandwidth bounds it from below. On a shared CPU
the bandwidth (and so every step) moves with what else runs; compare steps to that floor.
When other processes share the cores, OMP_WAIT_POLICY=PASSIVE (set before torch starts) stops
OpenMP workers from spinning against them: 5-10x faster steps on a loaded 2-core machine.

    python benchmarks/bench_decode_step.py                      # default model, float32 CPU
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_decode_step.py   # on a busy machine
    python benchmarks/bench_decode_step.py --batch-sizes 1,32 --steps 50
    python benchmarks/bench_decode_step.py --model-path qwen2.5-0.5b --load-format dummy
    python benchmarks/bench_decode_step.py --quantization none   # float32 weights
    python benchmarks/bench_decode_step.py --batch-sizes 32 --context-len 320 --python-layers
    python benchmarks/bench_decode_step.py --batch-sizes 64 --context-len 608 --shared-prefix-len 576
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

from radixlm.runtime.forward_batch import ForwardMode, build_forward_batch
from radixlm.runtime.layers.linear import LinearBase
from radixlm.runtime.memory_pool import KVCache
from radixlm.runtime.model_config import ModelConfig
from radixlm.runtime.model_loader import resolve_model
from radixlm.runtime.model_runner import ModelRunner
from radixlm.runtime.server_args import DTYPES, QUANTIZATIONS


def time_decode_steps(
    runner: ModelRunner,
    batch_size: int,
    context_len: int,
    num_steps: int,
    num_warmup: int,
    shared_prefix_len: int = 0,
) -> list[float]:
    """Seconds per decode step, warm-up steps excluded. Frees what it allocated. The first
    ``shared_prefix_len`` context tokens of every sequence are the same KV slots, as when the
    radix cache shares a system prompt."""
    rows = [runner.req_to_token_pool.alloc() for _ in range(batch_size)]
    assert all(row is not None for row in rows), "raise max_running_requests"
    shared = runner.token_allocator.alloc(shared_prefix_len) if shared_prefix_len else []
    assert shared is not None, "raise max_total_tokens"
    all_slots: list[list[int]] = []
    for row in rows:
        slots = runner.token_allocator.alloc(context_len - shared_prefix_len)
        assert slots is not None, "raise max_total_tokens"
        runner.req_to_token_pool.write(row, 0, shared + slots)
        all_slots.append(slots)
    generator = torch.Generator().manual_seed(0)
    token_ids = torch.randint(0, runner.model_config.vocab_size, (batch_size,), generator=generator)
    step_seconds = []
    for step in range(num_warmup + num_steps):
        seq_len = context_len + step
        new_slots = runner.token_allocator.alloc(batch_size)
        assert new_slots is not None, "raise max_total_tokens"
        for row, slot, slots in zip(rows, new_slots, all_slots, strict=True):
            runner.req_to_token_pool.write(row, seq_len, [slot])
            slots.append(slot)
        batch = build_forward_batch(
            ForwardMode.DECODE,
            [[int(t)] for t in token_ids],
            [seq_len] * batch_size,
            rows,
            new_slots,
            device=runner.device,
        )
        start = time.perf_counter()
        logits = runner.forward(batch)
        if runner.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        token_ids = logits.argmax(dim=-1)
        if step >= num_warmup:
            step_seconds.append(elapsed)
    for row, slots in zip(rows, all_slots, strict=True):
        runner.token_allocator.free(slots)
        runner.req_to_token_pool.free(row)
    if shared:
        runner.token_allocator.free(shared)
    return step_seconds


def linear_weight_bytes(linear: LinearBase) -> int:
    if linear.cpu_weight is not None:
        return linear.cpu_weight.nbytes()
    return linear.weight.numel() * linear.weight.element_size()


def measure_read_bandwidth(device: torch.device, num_bytes: int = 512 * 2**20) -> float:
    """Best-of-5 bytes/s of summing a buffer much larger than the last-level cache."""
    buffer = torch.ones(num_bytes // 4, dtype=torch.float32, device=device)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        buffer.sum().item()
        best = min(best, time.perf_counter() - start)
    return num_bytes / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-path", default=None)
    parser.add_argument("--load-format", default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", default="1,8,32,64")
    parser.add_argument("--context-len", type=int, default=256)
    parser.add_argument(
        "--shared-prefix-len",
        type=int,
        default=0,
        help="the first N context tokens of every sequence share KV slots (a cached prefix)",
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quantization", default="auto", choices=QUANTIZATIONS)
    parser.add_argument("--dtype", default="auto", choices=DTYPES)
    parser.add_argument(
        "--profile", action="store_true", help="print torch.profiler's op table for one batch size"
    )
    parser.add_argument(
        "--python-layers",
        action="store_true",
        help="CPU: also time the model's Python layers in place of the compiled loop over them "
        "(runtime/models/cpu_decoder.py), in alternating rounds",
    )
    args = parser.parse_args()
    if not 0 <= args.shared_prefix_len < args.context_len:
        parser.error("--shared-prefix-len must be at least 0 and below --context-len")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    resolved = resolve_model(args.model_path, args.load_format)
    config = ModelConfig.from_dir(resolved.model_dir)
    max_batch = max(batch_sizes)
    runner = ModelRunner(
        config,
        resolved,
        device=args.device,
        max_total_tokens=max_batch * (args.context_len + args.warmup + args.steps),
        max_running_requests=max_batch,
        context_len=args.context_len + args.warmup + args.steps,
        quantization=args.quantization,
        dtype=None if args.dtype == "auto" else getattr(torch, args.dtype),
    )
    print(
        f"model {resolved.display_path} ({resolved.weights_format}), {runner.dtype}, "
        f"quantization {runner.quantization}, "
        f"{runner.device}, threads {torch.get_num_threads()}, context {args.context_len}"
    )
    # Every linear weight (LM head included) is read once per step; embedding rows are not.
    weight_bytes = sum(
        linear_weight_bytes(m) for m in runner.model.modules() if isinstance(m, LinearBase)
    )
    kv_bytes_per_token = KVCache.bytes_per_token(
        config.num_layers, config.num_kv_heads, config.head_dim, runner.kv_cache_dtype
    )
    print(
        f"{'batch':>5} {'median ms/step':>15} {'min ms/step':>12} {'tok/s':>9} {'memory floor ms':>16}"
    )
    model = runner.model.model
    # label -> the compiled loop to run the steps with (None: the Python layers)
    variants = {"": model.cpu_decoder}
    if args.python_layers and model.cpu_decoder is not None:
        variants[" (python layers)"] = None
    for batch_size in batch_sizes:
        run_steps = functools.partial(
            time_decode_steps, runner, batch_size, args.context_len, args.steps, args.warmup,
            args.shared_prefix_len,
        )  # fmt: skip
        if args.profile:
            with torch.profiler.profile() as prof:
                run_steps()
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        seconds: dict[str, list[float]] = {label: [] for label in variants}
        for _ in range(3 if len(variants) > 1 else 1):  # rounds: the VM's speed drifts
            for label, decoder in variants.items():
                model.cpu_decoder = decoder
                seconds[label] += run_steps()
        model.cpu_decoder = variants[""]
        kv_tokens = (
            batch_size * (args.context_len - args.shared_prefix_len) + args.shared_prefix_len
        )
        step_bytes = weight_bytes + kv_tokens * kv_bytes_per_token
        floor = step_bytes / measure_read_bandwidth(runner.device)
        for label, steps in seconds.items():
            median = statistics.median(steps)
            print(
                f"{batch_size:>5} {median * 1e3:>15.2f} {min(steps) * 1e3:>12.2f} "
                f"{batch_size / median:>9.1f} {floor * 1e3:>16.2f}{label}"
            )


if __name__ == "__main__":
    main()
