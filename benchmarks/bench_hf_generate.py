"""Peer benchmark: Hugging Face transformers `generate` on the default model's weights.

Loads SmolLM2-135M-Instruct from the same GGUF our server uses (dequantized to dense weights),
then times greedy generation with a fixed output length (`min_new_tokens` = `max_new_tokens`, so
EOS cannot end a run early): single stream at each `--input-lens`, and one batch of
`--batch-size` prompts at `--batch-input-len`, each `--repeats` times (one row per run). Prompts are random non-special token ids of
exactly the stated length (no padding). One JSON object per configuration goes to stdout and,
with `--output-file`, is appended to a JSONL file.

    .venv/bin/python benchmarks/bench_hf_generate.py --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from bench_serving import default_gguf_path

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def load_model(gguf: Path, dtype: torch.dtype, packed: bool) -> Any:
    """Dense weights unless `packed`: transformers 5 keeps GGUF blocks packed by default when a
    GGUF matmul kernel is installed, and unpacks them on every matmul (far slower on this CPU)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        dtype=dtype,
        quantization_config=transformers.GgufConfig(dequantize=not packed),
    )
    return model.eval()


def random_prompts(
    batch_size: int, input_len: int, vocab_size: int, rng: np.random.Generator
) -> torch.Tensor:
    # SmolLM2's special tokens sit at the bottom of the vocabulary; stay clear of them.
    ids = rng.integers(100, vocab_size, size=(batch_size, input_len))
    return torch.from_numpy(ids)  # (batch_size, input_len)


@torch.inference_mode()
def timed_generate(model: Any, input_ids: torch.Tensor, num_new: int) -> float:
    start = time.perf_counter()
    out = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        do_sample=False,
        max_new_tokens=num_new,
        min_new_tokens=num_new,
        pad_token_id=model.config.eos_token_id,
    )
    elapsed = time.perf_counter() - start
    assert out.shape == (input_ids.shape[0], input_ids.shape[1] + num_new), out.shape
    return elapsed


def measure(
    model: Any, batch_size: int, input_len: int, output_len: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Output tok/s over the whole call, and decode tok/s with the prefill (a 1-token generate
    of the same prompts) subtracted."""
    input_ids = random_prompts(batch_size, input_len, model.config.vocab_size, rng)
    prefill_s = timed_generate(model, input_ids, 1)
    cpu_start = time.process_time()
    total_s = timed_generate(model, input_ids, output_len)
    cpu_s = time.process_time() - cpu_start
    return {
        "batch_size": batch_size,
        "input_len": input_len,
        "output_len": output_len,
        "prefill_s": prefill_s,
        "total_s": total_s,
        # CPU seconds of this process during the timed run: about num_threads * total_s on an
        # idle machine; far less means other processes took the cores and the figure is skewed.
        "cpu_s": cpu_s,
        "loadavg_1m": os.getloadavg()[0],
        "output_tok_s": batch_size * output_len / total_s,
        "decode_tok_s": batch_size * (output_len - 1) / (total_s - prefill_s),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--gguf", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--packed", action="store_true", help="keep GGUF blocks packed (see load_model)")
    p.add_argument("--input-lens", type=int, nargs="*", default=[128, 256])
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32, help="0 skips the batched run")
    p.add_argument("--batch-input-len", type=int, default=256)
    p.add_argument("--num-threads", type=int, default=None, help="default: torch's choice")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per configuration")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--output-file", default=None, help="JSONL file rows are appended to")
    args = p.parse_args()

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    gguf = Path(args.gguf) if args.gguf else default_gguf_path()
    load_start = time.perf_counter()
    model = load_model(gguf, DTYPES[args.dtype], args.packed)
    load_s = time.perf_counter() - load_start
    rng = np.random.default_rng(args.seed)
    timed_generate(model, random_prompts(1, 16, model.config.vocab_size, rng), 8)  # warm-up

    configs = [(1, n) for n in args.input_lens]
    if args.batch_size:
        configs.append((args.batch_size, args.batch_input_len))
    common = {
        "peer": "hf_generate",
        "model": gguf.name,
        "dtype": args.dtype,
        "weights": "packed" if args.packed else "dense",
        "num_threads": torch.get_num_threads(),
        "load_s": load_s,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    for batch_size, input_len in configs:
        for repeat in range(args.repeats):
            row = common | measure(model, batch_size, input_len, args.output_len, rng)
            row["repeat"] = repeat
            print(json.dumps(row), flush=True)
            if args.output_file:
                with open(args.output_file, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
