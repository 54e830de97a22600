"""Host time of one scheduler decode step: the real scheduler, batch runner and model runner
over a model so small that its GPU work is negligible, so what is left is the per-step host path
(batch building, copies, graph replay launch, sampling, request updates, output messages).

Submits ``--num-requests`` greedy requests, prefills them all, then times decode steps with every
request running: ``Scheduler.step()`` plus encoding the step's output message, as the scheduler
loop sends it. ``--profile`` prints the top functions of a cProfile run over the timed steps.

    python benchmarks/bench_scheduler_host.py --device cuda --num-requests 64 128 256
    python benchmarks/bench_scheduler_host.py --device cpu --vocab-size 2048 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import msgspec
import torch

import radixlm.runtime
from radixlm.radix_cache import RadixCache
from radixlm.runtime.batch_runner import BatchRunner
from radixlm.runtime.grammar_manager import GrammarManager
from radixlm.runtime.io_struct import GenerateRequest, TokenBatch
from radixlm.runtime.kv_manager import KVManager
from radixlm.runtime.model_config import ModelConfig
from radixlm.runtime.model_loader import ResolvedModel
from radixlm.runtime.model_runner import ModelRunner
from radixlm.runtime.output_builder import OutputBuilder
from radixlm.runtime.sampling_params import SamplingParams
from radixlm.runtime.scheduler import Scheduler
from radixlm.runtime.scheduler_config import SchedulerConfig

LLAMA_CONFIG = Path(radixlm.runtime.__file__).parent / "configs" / "llama-3.1-8b" / "config.json"


def tiny_llama_dir(folder: Path, vocab_size: int) -> Path:
    """Llama-3.1-8B's config with one small layer: same vocab (sampler and LM-head shapes)."""
    config = json.loads(LLAMA_CONFIG.read_text())
    config.update(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        vocab_size=vocab_size,
    )
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def build(args: argparse.Namespace, model_dir: Path, max_running: int) -> Scheduler:
    model_config = ModelConfig.from_dir(str(model_dir))
    context_len = args.input_len + args.output_len + 8
    runner = ModelRunner(
        model_config,
        ResolvedModel(str(model_dir), str(model_dir), "dummy", "tiny"),
        device=args.device,
        attention_backend=args.attention_backend,
        max_total_tokens=max_running * context_len + 64,
        max_running_requests=max_running,
        context_len=context_len,
        cuda_graph_max_bs=None if args.device == "cpu" else max_running,
    )
    kv = KVManager(runner.token_allocator, runner.req_to_token_pool, RadixCache())
    config = SchedulerConfig(
        context_len=context_len,
        vocab_size=model_config.vocab_size,
        max_running_requests=max_running,
        chunk_size=16384,
    )
    # No stop strings in this workload: the tokenizer is never asked to decode.
    batch_runner = BatchRunner(runner, None, [2], context_len, model_config.vocab_size)
    outputs = OutputBuilder(stream_interval=1)
    return Scheduler(config, kv, batch_runner, GrammarManager(None, None), outputs)


def time_steps(args: argparse.Namespace, model_dir: Path, num_requests: int) -> dict:
    scheduler = build(args, model_dir, num_requests)
    encoder = msgspec.msgpack.Encoder()
    generator = torch.Generator().manual_seed(num_requests)
    vocab = scheduler.config.vocab_size
    for i in range(num_requests):
        ids = torch.randint(3, vocab, (args.input_len,), generator=generator).tolist()
        sampling = SamplingParams(max_new_tokens=args.output_len, temperature=0.0, ignore_eos=True)
        request = GenerateRequest(rid=f"r{i}", input_ids=ids, sampling=sampling, stream=True)
        scheduler.handle(request)
    while scheduler.waiting:  # prefill everything first
        scheduler.step()
        encoder.encode(TokenBatch(updates=scheduler.outputs.drain()))
    assert len(scheduler.running) == num_requests, len(scheduler.running)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        scheduler.step()
        encoder.encode(TokenBatch(updates=scheduler.outputs.drain()))
    sync()
    profiler = cProfile.Profile() if args.profile else None
    seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        scheduler.step()
        encoder.encode(TokenBatch(updates=scheduler.outputs.drain()))
        if profiler is not None:
            profiler.disable()
        seconds.append(time.perf_counter() - start)
    sync()
    assert len(scheduler.running) == num_requests, "a request finished inside the timed steps"
    if profiler is not None:
        print(f"--- cProfile, {num_requests} running, {args.steps} steps")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)
    return {
        "num_running": num_requests,
        "device": args.device,
        "step_median_ms": round(1e3 * statistics.median(seconds), 3),
        "step_p90_ms": round(1e3 * sorted(seconds)[int(0.9 * len(seconds))], 3),
        "per_request_us": round(1e6 * statistics.median(seconds) / num_requests, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--attention-backend", default=None)
    p.add_argument("--num-requests", type=int, nargs="+", default=[64, 128])
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=256)
    p.add_argument("--vocab-size", type=int, default=128256)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--profile", type=int, default=0, help="print this many cProfile rows")
    p.add_argument("--result-filename", default=None)
    args = p.parse_args()
    if args.attention_backend is None:
        args.attention_backend = "torch" if args.device == "cpu" else "triton"
    assert args.output_len > args.warmup + args.steps + 1
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = tiny_llama_dir(Path(tmp), args.vocab_size)
        for n in args.num_requests:
            row = time_steps(args, model_dir, n)
            print(json.dumps(row))
            if args.result_filename:
                with open(args.result_filename, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
