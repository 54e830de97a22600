"""JSONSchemaBench coverage per backend: compile within the limit, and instance-test errors.

For each sampled schema file and each backend: compile through GrammarCompiler (worker process,
wall-clock limit); then walk every test instance's canonical tokenization through a matcher:
a valid instance with a masked token (or not accepting at the end) is "wrongly rejected", an
invalid instance that walks through to an accepting state is "wrongly accepted".

    python benchmarks/jsonschemabench_coverage.py --per-subset 10 --timeout 10 --out results.json

Many cores: run shards side by side, then print one table from their outputs.

    for i in 0 1 2 3; do python benchmarks/jsonschemabench_coverage.py --per-subset 1000 \
        --shard $i/4 --out shard$i.json & done; wait
    python benchmarks/jsonschemabench_coverage.py --merge shard*.json
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_grammar_common import instance_text, load_tokenizer, sample_files  # noqa: E402


def walk(grammar, token_ids: list[int], mask: np.ndarray) -> bool:
    """True when every token is allowed and the text is a complete match."""
    matcher = grammar.new_matcher()
    for token in token_ids:
        matcher.fill_allowed_mask(mask)
        if not mask[token]:
            return False
        matcher.accept_token(token)
    return matcher.is_accepting()


def run_backend(name: str, vocab, tokenizer, files: list[Path], timeout_s: float, compact: bool):
    from radixlm.constrained import (
        GrammarCompiler,
        GrammarError,
        GrammarSpec,
        create_grammar_backend,
    )

    backend = create_grammar_backend(name, vocab, compact_json=compact)
    compiler = GrammarCompiler(backend, timeout_s=timeout_s, cache_size=len(files) + 1)
    mask = np.zeros(vocab.vocab_size, dtype=bool)
    rows = []
    for path in files:
        case = json.loads(path.read_text())
        row = {"file": f"{path.parent.name}/{path.name}", "group": path.parent.name}
        start = time.monotonic()
        try:
            grammar = compiler.submit(GrammarSpec.from_schema(case["schema"])).result()
            row["status"] = "ok"
        except GrammarError as exc:
            row["status"] = "timeout" if "timed out" in exc.message else "refused"
            row["error"] = exc.message
            grammar = None
        row["compile_s"] = time.monotonic() - start
        counts = collections.Counter()
        if grammar is not None:
            for test in case["tests"]:
                ids = tokenizer.encode(instance_text(test["data"], compact))
                accepted = walk(grammar, ids, mask)
                kind = "valid" if test["valid"] else "invalid"
                counts[kind] += 1
                if accepted != test["valid"]:
                    counts[f"{kind}_wrong"] += 1
        row.update(counts)
        rows.append(row)
        print(
            name, row["file"], row["status"], f"{row['compile_s']:.2f}s", dict(counts), flush=True
        )
    compiler.shutdown()
    return rows


def summary_table(results: dict[str, list[dict]]) -> str:
    backends = list(results)
    groups = sorted({r["group"] for rows in results.values() for r in rows})
    head = "| subset | n | " + " | ".join(f"{b} compiled / refused / timeout" for b in backends)
    head += " | " + " | ".join(f"{b} valid rejected / invalid accepted" for b in backends) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(backends))]
    for group in [*groups, "TOTAL"]:
        cells_a, cells_b, n = [], [], 0
        for b in backends:
            rows = [r for r in results[b] if group in ("TOTAL", r["group"])]
            n = len(rows)
            status = collections.Counter(r["status"] for r in rows)
            cells_a.append(
                f"{status['ok']} ({100 * status['ok'] / max(n, 1):.0f}%) / {status['refused']} / {status['timeout']}"
            )
            vw = sum(r.get("valid_wrong", 0) for r in rows)
            v = sum(r.get("valid", 0) for r in rows)
            iw = sum(r.get("invalid_wrong", 0) for r in rows)
            i = sum(r.get("invalid", 0) for r in rows)
            cells_b.append(f"{vw}/{v} / {iw}/{i}")
        lines.append(
            f"| {group} | {n} | " + " | ".join(cells_a) + " | " + " | ".join(cells_b) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-subset", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--backends", default="outlines,llguidance,xgrammar")
    parser.add_argument("--compact", action="store_true", help="compact JSON (no whitespace)")
    parser.add_argument("--tokenizer-dir", default=None)
    parser.add_argument("--out", default=None, help="write per-schema rows as JSON here")
    parser.add_argument("--shard", default="0/1", help="I/N: every N-th sampled file from the I-th")
    parser.add_argument("--merge", nargs="+", help="print the table of these --out files instead")
    args = parser.parse_args()
    if args.merge:
        merged: dict[str, list[dict]] = collections.defaultdict(list)
        for path in args.merge:
            for name, rows in json.loads(Path(path).read_text()).items():
                merged[name].extend(rows)
        print(summary_table(dict(merged)))
        return

    from radixlm.runtime.grammar_vocab import vocab_from_hf_tokenizer

    tokenizer = load_tokenizer(args.tokenizer_dir)
    vocab = vocab_from_hf_tokenizer(tokenizer)
    index, count = (int(part) for part in args.shard.split("/"))
    files = sample_files(args.per_subset)[index::count]
    results = {}
    for name in args.backends.split(","):
        results[name] = run_backend(name, vocab, tokenizer, files, args.timeout, args.compact)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    print(summary_table(results))


if __name__ == "__main__":
    main()
