"""Does jump-forward change outputs? Greedy JSON-schema decoding with jump-forward on vs off.

For a hash-ordered sample of JSONSchemaBench schemas (per subset; schema text at most
``--max-schema-chars``), the default model is asked to write an instance of each schema,
greedily and under the schema, once with jump-forward and once with ``--disable-jump-forward``
(two in-process engines in turn, the same concurrency). A schema counts as "same" when both
runs give the same parsed JSON; when neither parses (both stopped by the token limit
mid-object) the texts must be equal. Schemas the backend refuses (400) are listed, not counted.
Differing cases are written with the first differing token and its context for diagnosis.

    .venv/bin/python benchmarks/bench_jump_forward_equality.py [--per-subset 8] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_grammar_common import DATA_DIR, sample_files, schema_prompt  # noqa: E402


def select_cases(per_subset: int, max_schema_chars: int) -> list[tuple[str, dict]]:
    cases = []
    for path in sample_files(per_subset * 4):  # over-sample, then keep the short schemas
        schema = json.loads(path.read_text())["schema"]
        if len(json.dumps(schema)) > max_schema_chars:
            continue
        group = path.parent.name
        if sum(1 for name, _ in cases if name.startswith(group + "/")) < per_subset:
            cases.append((f"{group}/{path.name}", schema))
    return cases


def run_engine(cases, disable_jump_forward: bool, args) -> list[dict]:
    from radixlm.runtime.engine import Engine

    engine = Engine(
        max_total_tokens=32768,
        max_running_requests=args.concurrency,
        grammar_backend=args.backend,
        disable_jump_forward=disable_jump_forward,
        quantization=args.quantization,
    )

    def one(case: tuple[str, dict]) -> dict:
        _, schema = case
        body = {
            "text": schema_prompt(schema),
            "sampling_params": {
                "temperature": 0,
                "max_new_tokens": args.max_new_tokens,
                "json_schema": json.dumps(schema),
            },
        }
        try:
            return engine.generate(body)
        except Exception as exc:  # noqa: BLE001 - a refused schema is a result, listed below
            return {"error": str(exc)}

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            outs = list(pool.map(one, cases))
        print(
            f"jump-forward {'off' if disable_jump_forward else 'on'}: "
            f"{time.perf_counter() - started:.1f} s, load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    finally:
        engine.shutdown()
    return outs


def parsed(out: dict) -> object:
    try:
        return json.loads(out["text"])
    except (KeyError, json.JSONDecodeError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-subset", type=int, default=8)
    parser.add_argument("--max-schema-chars", type=int, default=1500)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--backend", default="llguidance")
    parser.add_argument("--quantization", default="auto", help="the server's --quantization")
    parser.add_argument("--output-file", default="benchmarks/results/jump_forward_equality.jsonl")
    args = parser.parse_args()
    assert DATA_DIR.is_dir(), DATA_DIR
    cases = select_cases(args.per_subset, args.max_schema_chars)
    print(f"{len(cases)} schemas, load {os.getloadavg()[0]:.2f}", flush=True)
    on = run_engine(cases, False, args)
    off = run_engine(cases, True, args)

    from transformers import AutoTokenizer

    from radixlm.runtime.model_loader import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None).tokenizer_dir)
    counts = {"compared": 0, "same": 0, "same_tokens": 0, "refused": 0, "length_both": 0}
    jumped = total = 0
    refused, differing = [], []
    for (name, _), a, b in zip(cases, on, off, strict=True):
        if "error" in a or "error" in b:
            counts["refused"] += 1
            refused.append((name, (a.get("error") or b.get("error"))[:160]))
            continue
        counts["compared"] += 1
        jumped += a["meta_info"].get("jump_forward_tokens", 0)
        total += a["meta_info"]["completion_tokens"]
        pa, pb = parsed(a), parsed(b)
        same = pa == pb if (pa is not None or pb is not None) else a["text"] == b["text"]
        counts["length_both"] += pa is None and pb is None
        counts["same"] += same
        counts["same_tokens"] += a["output_ids"] == b["output_ids"]
        if not same:
            ia, ib = a["output_ids"], b["output_ids"]
            k = next(
                (i for i, (x, y) in enumerate(zip(ia, ib, strict=False)) if x != y),
                min(len(ia), len(ib)),
            )
            differing.append(
                {
                    "schema": name,
                    "first_diff_token": k,
                    "context": tokenizer.decode(ia[max(0, k - 8) : k]),
                    "on_next": [tokenizer.decode([t]) for t in ia[k : k + 4]],
                    "off_next": [tokenizer.decode([t]) for t in ib[k : k + 4]],
                    "on_finish": a["meta_info"]["finish_reason"],
                    "off_finish": b["meta_info"]["finish_reason"],
                }
            )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": commit,
        "backend": args.backend,
        "quantization": args.quantization,
        "concurrency": args.concurrency,
        "max_new_tokens": args.max_new_tokens,
        "schemas": len(cases),
        **counts,
        "same_share": round(counts["same"] / max(counts["compared"], 1), 4),
        "jumped_share_on": round(jumped / max(total, 1), 3),
        "load_avg_end": round(os.getloadavg()[0], 2),
    }
    for item in differing:
        print("DIFF", json.dumps(item, ensure_ascii=False))
    for name, message in refused:
        print("REFUSED", name, message)
    print(json.dumps(summary, indent=2))
    Path(args.output_file).parent.mkdir(parents=True, exist_ok=True)
    with open(args.output_file, "a") as f:
        f.write(json.dumps({**summary, "differing": differing}) + "\n")


if __name__ == "__main__":
    main()
