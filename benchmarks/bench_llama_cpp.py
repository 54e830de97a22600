"""Peer benchmark: llama-cpp-python on the same GGUF as our server, single stream.

llama-cpp-python serves one request at a time (no continuous batching), so its single-stream
rate is also its serving throughput. Runs only in the benchmark venv, never the project's:

    python3 -m venv .venv-bench && .venv-bench/bin/pip install llama-cpp-python
    .venv-bench/bin/python benchmarks/bench_llama_cpp.py

Greedy decoding of exactly `--output-len` tokens: `Llama.generate` does not stop at EOS (only
the completion API does), so no logit bias is needed. One JSON object per input length goes to
stdout (`--repeats` runs each) and, with `--output-file`, is appended to a JSONL file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
from bench_serving import default_gguf_path


def timed_generate(llm: Any, prompt_ids: list[int], output_len: int) -> tuple[float, float, float]:
    """(seconds to the first token, seconds to the last, CPU seconds) for one greedy generation."""
    llm.reset()  # no prompt reuse between runs
    cpu_start = time.process_time()
    start = time.perf_counter()
    first = 0.0
    for i, _ in enumerate(llm.generate(prompt_ids, top_k=1, temp=0.0, reset=True)):
        if i == 0:
            first = time.perf_counter() - start
        if i + 1 == output_len:
            break
    return first, time.perf_counter() - start, time.process_time() - cpu_start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gguf", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--input-lens", type=int, nargs="*", default=[128, 256])
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--n-threads", type=int, default=2)
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per input length")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--output-file", default=None, help="JSONL file rows are appended to")
    args = p.parse_args()

    gguf = Path(args.gguf) if args.gguf else default_gguf_path()
    llm = llama_cpp.Llama(
        model_path=str(gguf),
        n_threads=args.n_threads,
        n_threads_batch=args.n_threads,
        n_ctx=args.n_ctx,
        seed=args.seed,
        verbose=False,
    )
    rng = np.random.default_rng(args.seed)

    def prompt(n: int) -> list[int]:
        # SmolLM2's special tokens sit at the bottom of the vocabulary; stay clear of them.
        return rng.integers(100, llm.n_vocab(), size=n).tolist()

    timed_generate(llm, prompt(16), 8)  # warm-up
    common = {
        "peer": "llama_cpp_python",
        "model": gguf.name,
        "n_threads": args.n_threads,
        "llama_cpp_python": llama_cpp.__version__,
        "python": platform.python_version(),
        "batch_size": 1,
    }
    for input_len in args.input_lens:
        for repeat in range(args.repeats):
            ttft_s, total_s, cpu_s = timed_generate(llm, prompt(input_len), args.output_len)
            row = common | {
                "input_len": input_len,
                "output_len": args.output_len,
                "prefill_s": ttft_s,
                "total_s": total_s,
                # About n_threads * total_s on an idle machine; far less means a skewed figure.
                "cpu_s": cpu_s,
                "loadavg_1m": os.getloadavg()[0],
                "output_tok_s": args.output_len / total_s,
                "decode_tok_s": (args.output_len - 1) / (total_s - ttft_s),
                "repeat": repeat,
            }
            print(json.dumps(row), flush=True)
            if args.output_file:
                with open(args.output_file, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
