"""Sampled outputs under JSONSchemaBench schemas validate (issue 4, "Done means", property run).

For each schema of the sample (``--per-subset`` per group in the fixed hash order, or ``--all``),
the default model samples ``--seeds`` outputs at temperature 1.0 under the schema through an
in-process engine with the default grammar backend. Every output that stopped on its own must
parse and validate with ``jsonschema`` (formats checked where jsonschema has a checker); outputs
that hit ``--max-new-tokens`` mid-structure are the only allowed exceptions and are counted
apart. Schemas the backend refuses are listed with their 400 messages.

    .venv/bin/python benchmarks/jsonschemabench_sample_validity.py [--per-subset 5] [--seeds 3]

Exit status 1 if any stopped output fails validation.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_grammar_common import DATA_DIR, sample_files, schema_prompt  # noqa: E402


def validation_error(schema: object, text: str) -> str | None:
    """None if ``text`` is JSON that validates against ``schema``, else why not."""
    import jsonschema

    try:
        instance = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    cls = jsonschema.validators.validator_for(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    return None if error is None else f"{error.json_path}: {error.message[:200]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-subset", type=int, default=5)
    parser.add_argument("--all", action="store_true", help="every schema file")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--backend", default="llguidance")
    parser.add_argument("--output-file", default="benchmarks/results/sample_validity.jsonl")
    args = parser.parse_args()
    assert DATA_DIR.is_dir(), DATA_DIR
    files = sorted(DATA_DIR.glob("*/*.json")) if args.all else sample_files(args.per_subset)
    cases = [(f"{p.parent.name}/{p.name}", json.loads(p.read_text())["schema"]) for p in files]
    jobs = [(name, schema, seed) for name, schema in cases for seed in range(args.seeds)]
    print(f"{len(cases)} schemas x {args.seeds} seeds, load {os.getloadavg()[0]:.2f}", flush=True)

    from radixlm.runtime.engine import Engine

    engine = Engine(
        max_total_tokens=65536, max_running_requests=args.concurrency, grammar_backend=args.backend
    )

    def one(job: tuple[str, object, int]) -> dict:
        _, schema, seed = job
        body = {
            "text": schema_prompt(schema),
            "sampling_params": {
                "temperature": 1.0,
                "sampling_seed": seed,
                "max_new_tokens": args.max_new_tokens,
                "json_schema": json.dumps(schema),
            },
        }
        try:
            return engine.generate(body)
        except Exception as exc:  # noqa: BLE001 - a refused schema is a result, listed below
            return {"error": str(exc)}

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(args.concurrency) as pool:
            outs = list(pool.map(one, jobs))
    finally:
        engine.shutdown()
    elapsed = time.perf_counter() - started

    counts: collections.Counter = collections.Counter()
    refused: dict[str, str] = {}
    invalid: list[tuple[str, int, str, str]] = []
    per_subset: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for (name, schema, seed), out in zip(jobs, outs, strict=True):
        subset = name.split("/")[0]
        if "error" in out:
            refused[name] = out["error"][:200]
            continue
        finish = out["meta_info"]["finish_reason"]
        kind = finish["type"] if isinstance(finish, dict) else str(finish)
        if kind == "length":
            counts["length"] += 1
            per_subset[subset]["length"] += 1
            continue
        error = validation_error(schema, out["text"])
        counts["valid" if error is None else "invalid"] += 1
        per_subset[subset]["valid" if error is None else "invalid"] += 1
        if error is not None:
            invalid.append((name, seed, error, out["text"][:300]))
    compiled = len({name for name, _, _ in jobs} - set(refused))
    for name, message in sorted(refused.items()):
        print(f"REFUSED {name}: {message}")
    for name, seed, error, text in invalid:
        print(f"INVALID {name} seed {seed}: {error}\n  {text!r}")
    print("\n| subset | compiled | outputs stopped: valid / invalid | stopped by length |")
    print("|---|---|---|---|")
    for subset in sorted({name.split("/")[0] for name, _ in cases}):
        n = sum(1 for name, _ in cases if name.startswith(subset + "/"))
        ok = sum(1 for name, _ in cases if name.startswith(subset + "/") and name not in refused)
        c = per_subset[subset]
        print(f"| {subset} | {ok}/{n} | {c['valid']} / {c['invalid']} | {c['length']} |")
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "backend": args.backend,
        "schemas": len(cases),
        "compiled": compiled,
        "seeds": args.seeds,
        "max_new_tokens": args.max_new_tokens,
        **counts,
        "seconds": round(elapsed, 1),
        "load_avg_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary, indent=2))
    Path(args.output_file).parent.mkdir(parents=True, exist_ok=True)
    with open(args.output_file, "a") as f:
        f.write(json.dumps({**summary, "refused": refused, "invalid": invalid}) + "\n")
    sys.exit(1 if invalid else 0)


if __name__ == "__main__":
    main()
