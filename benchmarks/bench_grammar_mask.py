"""Grammar compile time and per-token mask time for each backend, on the same schemas.

Compile time is submit-to-usable-grammar through GrammarCompiler (worker process, wall clock;
a timeout counts at the limit). Mask time is one `fill_allowed_mask` into the (vocab,) bool row,
timed at every token while walking each schema's first valid instance (canonical tokens).

    python benchmarks/bench_grammar_mask.py --per-subset 5 --timeout 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_grammar_common import instance_text, load_tokenizer, sample_files  # noqa: E402

JSB_SUBSETS = [
    "Github_easy",
    "Github_hard",
    "Github_medium",
    "Github_trivial",
    "Github_ultra",
    "Glaiveai2K",
    "JsonSchemaStore",
    "Kubernetes",
    "Snowplow",
    "WashingtonPost",
]


def measure(
    name: str, vocab, tokenizer, files: list[Path], timeout_s: float, compact: bool
) -> dict:
    from radixlm.constrained import (
        GrammarCompiler,
        GrammarError,
        GrammarSpec,
        create_grammar_backend,
    )

    start = time.perf_counter()
    backend = create_grammar_backend(name, vocab, compact_json=compact)
    startup_s = time.perf_counter() - start
    compiler = GrammarCompiler(backend, timeout_s=timeout_s, cache_size=len(files) + 1)
    compiler.submit(GrammarSpec("regex", "warm")).result()  # worker start-up is not compile time
    compile_s: list[float] = []
    mask_us: list[float] = []
    num_ok = 0
    mask = np.zeros(vocab.vocab_size, dtype=bool)
    for path in files:
        case = json.loads(path.read_text())
        start = time.perf_counter()
        try:
            grammar = compiler.submit(GrammarSpec.from_schema(case["schema"])).result()
        except GrammarError as exc:
            if "timed out" in exc.message:
                compile_s.append(timeout_s)
            continue
        compile_s.append(time.perf_counter() - start)
        num_ok += 1
        valid = [t["data"] for t in case["tests"] if t["valid"]]
        if not valid:
            continue
        matcher = grammar.new_matcher()
        for token in tokenizer.encode(instance_text(valid[0], compact)):
            t0 = time.perf_counter_ns()
            matcher.fill_allowed_mask(mask)
            mask_us.append((time.perf_counter_ns() - t0) / 1e3)
            if not mask[token]:
                break
            matcher.accept_token(token)
    compiler.shutdown()
    pct = lambda xs, q: float(np.percentile(xs, q)) if xs else float("nan")  # noqa: E731
    return {
        "backend": name,
        "startup_s": startup_s,
        "compiled": num_ok,
        "schemas": len(files),
        "compile_p50_ms": 1e3 * pct(compile_s, 50),
        "compile_p95_ms": 1e3 * pct(compile_s, 95),
        "mask_p50_us": pct(mask_us, 50),
        "mask_p99_us": pct(mask_us, 99),
        "mask_samples": len(mask_us),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-subset", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--backends", default="outlines,llguidance,xgrammar")
    parser.add_argument("--compact", action="store_true")
    parser.add_argument("--tokenizer-dir", default=None)
    args = parser.parse_args()

    from radixlm.runtime.grammar_vocab import vocab_from_hf_tokenizer

    tokenizer = load_tokenizer(args.tokenizer_dir)
    vocab = vocab_from_hf_tokenizer(tokenizer)
    files = sample_files(args.per_subset, JSB_SUBSETS)
    print("| backend | start-up s | compiled | compile p50 / p95 ms | mask p50 / p99 us | masks |")
    print("|---|---|---|---|---|---|")
    for name in args.backends.split(","):
        r = measure(name, vocab, tokenizer, files, args.timeout, args.compact)
        print(
            f"| {r['backend']} | {r['startup_s']:.2f} | {r['compiled']}/{r['schemas']} | "
            f"{r['compile_p50_ms']:.1f} / {r['compile_p95_ms']:.1f} | "
            f"{r['mask_p50_us']:.1f} / {r['mask_p99_us']:.1f} | {r['mask_samples']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
