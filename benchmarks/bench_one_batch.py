"""One static batch through the ModelRunner, no server (SGLang's ``bench_one_batch`` shape).

For every (batch size, input length, output length): one prefill of the whole batch, then
``output_len - 1`` decode steps, each synchronised and timed. Reports the prefill latency, the
median decode step and its throughput, and the decode step's roofline: the bytes a step must
read (every weight but the input embedding, plus each sequence's KV) over the copy bandwidth
measured at start on the same GPU. With ``--hf-peer`` it then times HF transformers
``generate`` on the same shapes and random weights, in the same process.

    python benchmarks/bench_one_batch.py --model-path llama-3.1-8b --load-format dummy \\
        --batch-size 1 --input-len 1024 --output-len 256
    python benchmarks/bench_one_batch.py --model-path llama-3.1-8b --load-format dummy \\
        --batch-size 1 8 32 64 128 256 --input-len 128 --output-len 8

Every result row (JSON, one per line) carries the device, library versions, commit and date.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

import radixlm.runtime
from radixlm.kernels import pdl
from radixlm.runtime.attention.base import default_gpu_attention_backend
from radixlm.runtime.forward_batch import ForwardBatch, ForwardMode, build_forward_batch
from radixlm.runtime.memory_pool import KVCache
from radixlm.runtime.model_config import ModelConfig
from radixlm.runtime.model_loader import KNOWN_DUMMY_MODELS, ResolvedModel
from radixlm.runtime.model_runner import ModelRunner

CONFIGS_DIR = Path(radixlm.runtime.__file__).parent / "configs"


@dataclass
class Result:
    engine: str
    model: str
    batch_size: int
    input_len: int
    output_len: int
    prefill_ms: float
    prefill_tok_s: float
    decode_median_ms: float
    decode_tok_s: float
    total_ms: float
    roofline_ms: float  # bytes one median decode step must read / measured copy bandwidth
    pct_of_roofline: float
    attention_backend: str
    cuda_graph: bool
    overlap: bool = False  # decode loop launches pass N+1 before reading pass N's tokens
    pdl: bool = False  # our Triton kernels launched with programmatic dependent launch


def environment(bandwidth: float) -> dict:
    import triton

    try:
        import flashinfer

        flashinfer_version = flashinfer.__version__
    except ImportError:
        flashinfer_version = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = os.environ.get("RADIXLM_COMMIT", "unknown")
    return {
        "device": torch.cuda.get_device_name(),
        "copy_bandwidth_tb_s": round(bandwidth / 1e12, 3),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "flashinfer": flashinfer_version,
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def measure_copy_bandwidth(num_bytes: int = 2 << 30) -> float:
    """Device-to-device copy, bytes read plus written per second (the METHOD.md ceiling)."""
    src = torch.empty(num_bytes // 2, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1e3 / 20
    return 2 * num_bytes / seconds


def resolved_for(model_path: str, load_format: str) -> ResolvedModel:
    if load_format == "dummy":
        folder = CONFIGS_DIR / model_path if model_path in KNOWN_DUMMY_MODELS else Path(model_path)
        return ResolvedModel(str(folder), str(folder), "dummy", model_path)
    return ResolvedModel(model_path, model_path, "safetensors", model_path)


def weight_bytes_per_step(runner: ModelRunner) -> int:
    """Bytes of weights a decode step reads: all of them, except an untied input embedding
    (a gather of a few rows). A tied one is read whole by the LM head."""
    model = runner.model
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    if not runner.model_config.tie_word_embeddings:
        embed = model.model.embed_tokens.weight
        total -= embed.numel() * embed.element_size()
    return total


def run_once(
    runner: ModelRunner,
    batch_size: int,
    input_len: int,
    output_len: int,
    seed: int,
    overlap: bool = False,
) -> tuple[float, list[float]]:
    """Prefill seconds and each decode step's seconds. Frees what it allocated."""
    rng = np.random.default_rng(seed)
    total_len = input_len + output_len
    rows = [runner.req_to_token_pool.alloc() for _ in range(batch_size)]
    assert None not in rows, "raise --max-running-requests"
    slots = runner.token_allocator.alloc(batch_size * total_len)
    assert slots is not None, "KV pool too small"
    for i, row in enumerate(rows):
        runner.req_to_token_pool.write(row, 0, slots[i * total_len : (i + 1) * total_len])
    device = runner.device
    # (batch, total_len): row i's KV slot of every position, as a device table.
    slot_table = torch.tensor(slots, dtype=torch.int64, device=device).view(batch_size, total_len)
    input_ids = rng.integers(0, 10000, (batch_size, input_len)).tolist()  # SGLang's ids
    prefill = build_forward_batch(
        ForwardMode.EXTEND,
        input_ids,
        [0] * batch_size,
        rows,
        slot_table[:, :input_len].reshape(-1).tolist(),
        device=device,
        prompt_lens=[input_len] * batch_size,
    )
    torch.cuda.synchronize()
    start = time.perf_counter()
    next_ids = runner.forward(prefill).argmax(-1)
    torch.cuda.synchronize()
    prefill_seconds = time.perf_counter() - start

    # Decode inputs stay on the device: the step's cost is the runner's, not list building.
    # One (steps, 7, batch) table in ForwardBatch.packed's row order (PACKED_ROWS), so the
    # CUDA-graph runner fills its inputs with one copy, as it does for the server's batches.
    steps = output_len - 1
    assert steps >= 3 or not overlap, "the overlapped loop needs output_len >= 4"
    positions = torch.arange(input_len, input_len + steps, device=device)
    positions = positions[:, None].expand(-1, batch_size)  # (steps, batch)
    table = torch.stack(
        [
            torch.zeros_like(positions),  # input_ids: each step's argmax goes here
            positions,
            slot_table[:, input_len : input_len + steps].t(),  # out_cache_loc
            torch.tensor(rows, dtype=torch.int64, device=device).expand(steps, -1),
            positions + 1,  # seq_lens
            positions,  # prefix_lens
            torch.ones_like(positions),  # extend_lens
        ],
        dim=1,
    ).contiguous()  # (steps, 7, batch)
    logits_indices = torch.arange(batch_size, device=device)
    step_seconds = []
    # Overlapped (the server's default on CUDA): pass N+1 is launched before pass N's tokens are
    # read back; its input ids come from pass N's argmax on the device. A step is then the
    # interval between two token rows reaching the host, the inter-token latency a streaming
    # client sees. Serial: each step is timed alone, from a synchronised GPU to its tokens.
    token_rows = torch.empty((steps, batch_size), dtype=torch.int64, pin_memory=True)
    done: list[torch.cuda.Event] = []
    last_arrival = 0.0
    torch.cuda.synchronize()
    for step in range(steps):
        seq_len = input_len + step + 1
        packed = table[step]
        input_ids, positions_now, out_loc, req_rows, seq_lens, prefix_lens, ones = packed
        batch = ForwardBatch(
            mode=ForwardMode.DECODE,
            input_ids=input_ids,
            positions=positions_now,
            out_cache_loc=out_loc,
            req_pool_indices=req_rows,
            seq_lens=seq_lens,
            prefix_lens=prefix_lens,
            extend_lens=ones,
            logits_indices=logits_indices,
            seq_lens_cpu=(seq_len,) * batch_size,
            prefix_lens_cpu=(seq_len - 1,) * batch_size,
            extend_lens_cpu=(1,) * batch_size,
            packed=packed,
            logits_are_rows=True,
        )
        if overlap:
            input_ids.copy_(next_ids)
            next_ids = runner.forward(batch).argmax(-1)
            token_rows[step].copy_(next_ids, non_blocking=True)
            done.append(torch.cuda.Event())
            done[-1].record()
            if step > 0:
                done[step - 1].synchronize()  # pass N's tokens are on the host
                arrival = time.perf_counter()
                if step > 1:
                    step_seconds.append(arrival - last_arrival)
                last_arrival = arrival
            continue
        torch.cuda.synchronize()
        start = time.perf_counter()
        input_ids.copy_(next_ids)
        next_ids = runner.forward(batch).argmax(-1)
        token_rows[step].copy_(next_ids)  # to the host, as a server would
        step_seconds.append(time.perf_counter() - start)
    if overlap:
        done[-1].synchronize()
        step_seconds.append(time.perf_counter() - last_arrival)
    runner.token_allocator.free(slots)
    for row in rows:
        runner.req_to_token_pool.free(row)
    return prefill_seconds, step_seconds


def bench_radixlm(args, bandwidth: float) -> list[Result]:
    shapes = list(itertools.product(args.batch_size, args.input_len, args.output_len))
    max_bs = max(args.batch_size)
    context_len = max(i + o for _, i, o in shapes) + 8
    config = ModelConfig.from_dir(resolved_for(args.model_path, args.load_format).model_dir)
    runner = ModelRunner(
        config,
        resolved_for(args.model_path, args.load_format),
        device="cuda",
        dtype=torch.bfloat16,
        attention_backend=args.attention_backend,
        max_total_tokens=max(bs * (i + o) for bs, i, o in shapes) + 64,
        max_running_requests=max_bs,
        context_len=context_len,
        seed=args.seed,
        cuda_graph_max_bs=None if args.disable_cuda_graph else args.cuda_graph_max_bs or max_bs,
    )
    weights = weight_bytes_per_step(runner)
    kv_per_token = KVCache.bytes_per_token(
        config.num_layers, config.num_kv_heads, config.head_dim, torch.bfloat16
    )
    results = []
    for bs, input_len, output_len in shapes:
        run_once(runner, bs, input_len, min(output_len, 4), args.seed, args.overlap)  # warm-up
        prefill_s, steps = run_once(runner, bs, input_len, output_len, args.seed + 1, args.overlap)
        median = statistics.median(steps)
        # The median step attends over about input_len + output_len / 2 keys per sequence.
        step_bytes = weights + bs * (input_len + output_len // 2) * kv_per_token
        roofline = step_bytes / bandwidth
        results.append(
            Result(
                engine="radixlm",
                model=args.model_path,
                batch_size=bs,
                input_len=input_len,
                output_len=output_len,
                prefill_ms=prefill_s * 1e3,
                prefill_tok_s=bs * input_len / prefill_s,
                decode_median_ms=median * 1e3,
                decode_tok_s=bs / median,
                total_ms=(prefill_s + sum(steps)) * 1e3,
                roofline_ms=roofline * 1e3,
                pct_of_roofline=100 * roofline / median,
                attention_backend=args.attention_backend,
                cuda_graph=runner.cuda_graph_runner is not None,
                overlap=args.overlap,
                pdl=pdl.ENABLED,
            )
        )
        print_row(results[-1])
    del runner
    torch.cuda.empty_cache()
    return results


@torch.inference_mode()
def bench_hf(args, bandwidth: float) -> list[Result]:
    """HF transformers ``generate`` (its default dynamic cache, SDPA attention) on random
    weights of the same config; decode ms/token from two lengths' difference."""
    import transformers

    folder = resolved_for(args.model_path, args.load_format).model_dir
    hf_config = transformers.AutoConfig.from_pretrained(folder)
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.bfloat16)
    model.eval()
    results = []
    for bs, input_len in itertools.product(args.hf_batch_size, args.input_len):
        rng = np.random.default_rng(args.seed)
        ids = torch.tensor(rng.integers(0, 10000, (bs, input_len)), device="cuda")

        def generate(num_new: int, ids: torch.Tensor = ids) -> float:
            torch.cuda.synchronize()
            start = time.perf_counter()
            model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=num_new,
                min_new_tokens=num_new,
                do_sample=False,
                pad_token_id=0,
            )
            torch.cuda.synchronize()
            return time.perf_counter() - start

        generate(2)  # warm-up
        prefill_s = generate(1)
        num_new = args.hf_output_len
        per_step = (generate(num_new) - prefill_s) / (num_new - 1)
        results.append(
            Result(
                engine="hf-transformers",
                model=args.model_path,
                batch_size=bs,
                input_len=input_len,
                output_len=num_new,
                prefill_ms=prefill_s * 1e3,
                prefill_tok_s=bs * input_len / prefill_s,
                decode_median_ms=per_step * 1e3,
                decode_tok_s=bs / per_step,
                total_ms=(prefill_s + per_step * (num_new - 1)) * 1e3,
                roofline_ms=float("nan"),
                pct_of_roofline=float("nan"),
                attention_backend="sdpa",
                cuda_graph=False,
            )
        )
        print_row(results[-1])
    return results


def print_row(r: Result) -> None:
    print(
        f"{r.engine:>15} {r.model:>13} bs={r.batch_size:<4} in={r.input_len:<5} "
        f"out={r.output_len:<4} prefill {r.prefill_ms:9.2f} ms  decode {r.decode_median_ms:7.3f} "
        f"ms/step {r.decode_tok_s:10.1f} tok/s  roofline {r.roofline_ms:6.3f} ms "
        f"({r.pct_of_roofline:5.1f}%){'  overlap' if r.overlap else ''}"
        f"{'  pdl' if r.pdl else ''}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", default="llama-3.1-8b")
    parser.add_argument("--load-format", default="dummy", choices=("dummy", "safetensors"))
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1])
    parser.add_argument("--input-len", type=int, nargs="+", default=[1024])
    parser.add_argument("--output-len", type=int, nargs="+", default=[16])
    parser.add_argument("--attention-backend", default=None, choices=("flashinfer", "triton"))
    parser.add_argument("--cuda-graph-max-bs", type=int, default=None)
    parser.add_argument("--disable-cuda-graph", action="store_true")
    parser.add_argument(
        "--overlap",
        action="store_true",
        help="launch each decode pass before reading the previous pass's tokens back (the "
        "overlapped scheduler's loop); a step is then the interval between token arrivals",
    )
    parser.add_argument(
        "--disable-pdl",
        action="store_true",
        help="launch our Triton kernels without programmatic dependent launch (kernels/pdl.py)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hf-peer", action="store_true", help="also time HF transformers")
    parser.add_argument("--hf-batch-size", type=int, nargs="+", default=[1])
    parser.add_argument("--hf-output-len", type=int, default=32)
    parser.add_argument("--result-filename", default=None, help="append JSON lines here")
    args = parser.parse_args()
    args.attention_backend = args.attention_backend or default_gpu_attention_backend()
    pdl.ENABLED = not args.disable_pdl
    bandwidth = measure_copy_bandwidth()
    env = environment(bandwidth)
    print(json.dumps(env), flush=True)
    results = bench_radixlm(args, bandwidth)
    if args.hf_peer:
        results += bench_hf(args, bandwidth)
    if args.result_filename:
        with open(args.result_filename, "a", encoding="utf-8") as f:
            for r in results:
                f.write(json.dumps({**asdict(r), **env}) + "\n")


if __name__ == "__main__":
    main()
