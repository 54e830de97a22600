"""End-to-end JSON decoding (issue 4): jump-forward on vs off, constrained vs unconstrained.

Starts two servers (default, and --disable-jump-forward), sends 32 concurrent greedy "character
profile" requests (a schema with long forced keys) to each in turn, ``--repeats`` times
interleaved, and reports the median run's output tok/s (every run's too), the
jump-forwarded share, and whether the parsed JSON is identical with jump-forward on and off
(when neither output parses, both stopped by the token limit, their texts must be equal; the
first differing token of each differing pair is printed). Also sends the same prompts
unconstrained for the constrained/unconstrained ratio. Load averages are recorded beside the
figures: this is a shared 2-core machine.

    .venv/bin/python benchmarks/bench_json_decoding.py [--concurrency 32] [--max-new-tokens 160]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.server_harness import ServerProcess  # noqa: E402

CHARACTER_SCHEMA = {
    "type": "object",
    "properties": {
        "character_full_name": {"type": "string", "maxLength": 40},
        "character_age_in_years": {"type": "integer"},
        "character_home_town": {"type": "string", "maxLength": 40},
        "character_favourite_weapon": {"type": "string", "enum": ["sword", "bow", "axe", "staff"]},
        "character_is_still_alive": {"type": "boolean"},
        "character_strength_from_one_to_ten": {"type": "integer"},
    },
    "required": [
        "character_full_name",
        "character_age_in_years",
        "character_home_town",
        "character_favourite_weapon",
        "character_is_still_alive",
        "character_strength_from_one_to_ten",
    ],
    "additionalProperties": False,
}
NAMES = [
    "a knight",
    "an archer",
    "a wizard",
    "a thief",
    "a farmer",
    "a queen",
    "a pirate",
    "a monk",
]


def prompts(n: int) -> list[str]:
    return [
        "<|im_start|>user\nDescribe "
        f"{NAMES[i % len(NAMES)]} number {i} as a JSON character profile.<|im_end|>\n"
        "<|im_start|>assistant\n"
        for i in range(n)
    ]


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (Linux /proc)."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
    return total


def run_batch(server, texts: list[str], max_new_tokens: int, schema: dict | None) -> dict:
    url = server.url
    params = {"temperature": 0, "max_new_tokens": max_new_tokens}
    if schema is not None:
        params["json_schema"] = json.dumps(schema)

    def one(text: str) -> dict:
        res = requests.post(
            url + "/generate", json={"text": text, "sampling_params": params}, timeout=900
        )
        res.raise_for_status()
        return res.json()

    start, cpu_start = time.perf_counter(), tree_cpu_seconds(server.proc.pid)
    with ThreadPoolExecutor(len(texts)) as pool:
        outs = list(pool.map(one, texts))
    elapsed = time.perf_counter() - start
    cpu_seconds = tree_cpu_seconds(server.proc.pid) - cpu_start
    print(
        f"{len(texts)} requests: {elapsed:.1f} s, {cpu_seconds:.1f} CPU-s, "
        f"load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    tokens = sum(o["meta_info"]["completion_tokens"] for o in outs)
    jumped = sum(o["meta_info"].get("jump_forward_tokens", 0) for o in outs)
    return {
        "outputs": outs,
        "seconds": elapsed,
        "tokens": tokens,
        "tok_per_s": tokens / elapsed,
        # Output tokens per CPU-second of the server's processes: less sensitive than wall time
        # to other jobs on this 2-core machine (they take cores, not our CPU-seconds).
        "tok_per_cpu_s": tokens / max(cpu_seconds, 1e-9),
        "jumped_share": jumped / max(tokens, 1),
    }


def parsed(output: dict) -> object:
    try:
        return json.loads(output["text"])
    except json.JSONDecodeError:
        return None


def median_of(runs: list[dict], key: str) -> float:
    return sorted(r[key] for r in runs)[len(runs) // 2]


def same_output(a: dict, b: dict) -> bool:
    pa, pb = parsed(a), parsed(b)
    if pa is None and pb is None:
        return a["text"] == b["text"]
    return pa == pb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--output-file", default="benchmarks/results/json_decoding.jsonl")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--server-flags", default="", help='extra server flags, e.g. "--quantization none"'
    )
    args = parser.parse_args()
    texts = prompts(args.concurrency)
    # Both servers stay up (an idle one blocks on its inbox) and the runs interleave, so load
    # from other jobs on this shared machine drifts over on, off and unconstrained alike.
    servers = {}
    try:
        for tag, flags in (("on", []), ("off", ["--disable-jump-forward"])):
            servers[tag] = ServerProcess(
                "--max-total-tokens", "32768", *args.server_flags.split(), *flags
            )
            run_batch(servers[tag], texts[:2], 16, CHARACTER_SCHEMA)  # warm-up: compile
        all_runs: dict[str, list[dict]] = {
            "jump_forward_on": [],
            "jump_forward_off": [],
            "unconstrained": [],
        }
        plan = (
            ("jump_forward_on", "on", CHARACTER_SCHEMA),
            ("jump_forward_off", "off", CHARACTER_SCHEMA),
            ("unconstrained", "on", None),
        )
        for _ in range(args.repeats):
            for tag, server, schema in plan:
                requests.post(servers[server].url + "/flush_cache", timeout=60)
                print(tag, end=": ", flush=True)
                all_runs[tag].append(run_batch(servers[server], texts, args.max_new_tokens, schema))
    finally:
        for server in servers.values():
            server.stop()
    # The median run of each kind (by tok/s); its outputs are the ones compared below.
    runs = {
        tag: sorted(rs, key=lambda r: r["tok_per_s"])[len(rs) // 2] for tag, rs in all_runs.items()
    }
    on, off = runs["jump_forward_on"]["outputs"], runs["jump_forward_off"]["outputs"]
    same = sum(same_output(a, b) for a, b in zip(on, off, strict=True))
    for i, (a, b) in enumerate(zip(on, off, strict=True)):
        if not same_output(a, b):
            pairs = zip(a["output_ids"], b["output_ids"], strict=False)
            k = next((j for j, (x, y) in enumerate(pairs) if x != y), None)
            print(f"differs #{i} at output token {k}:\n  on:  {a['text']!r}\n  off: {b['text']!r}")
    valid = sum(parsed(a) is not None for a in on)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": commit,
        "machine": platform.processor() or platform.machine(),
        "concurrency": args.concurrency,
        "max_new_tokens": args.max_new_tokens,
        "server_flags": args.server_flags,
        "repeats": args.repeats,
        **{f"{tag}_tok_per_s": round(r["tok_per_s"], 1) for tag, r in runs.items()},
        **{
            f"{tag}_tok_per_s_runs": [round(r["tok_per_s"], 1) for r in rs]
            for tag, rs in all_runs.items()
        },
        **{
            f"{tag}_tok_per_cpu_s_runs": [round(r["tok_per_cpu_s"], 1) for r in rs]
            for tag, rs in all_runs.items()
        },
        "speedup_jump_forward_cpu_s": round(
            median_of(all_runs["jump_forward_on"], "tok_per_cpu_s")
            / median_of(all_runs["jump_forward_off"], "tok_per_cpu_s"),
            2,
        ),
        "constrained_vs_unconstrained_cpu_s": round(
            median_of(all_runs["jump_forward_on"], "tok_per_cpu_s")
            / median_of(all_runs["unconstrained"], "tok_per_cpu_s"),
            2,
        ),
        "jumped_share_on": round(runs["jump_forward_on"]["jumped_share"], 3),
        "speedup_jump_forward": round(
            runs["jump_forward_on"]["tok_per_s"] / runs["jump_forward_off"]["tok_per_s"], 2
        ),
        "constrained_vs_unconstrained": round(
            runs["jump_forward_on"]["tok_per_s"] / runs["unconstrained"]["tok_per_s"], 2
        ),
        "valid_json_on": f"{valid}/{len(on)}",
        "same_parsed_json_on_off": f"{same}/{len(on)}",
        "load_avg_1m_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary, indent=2))
    Path(args.output_file).parent.mkdir(parents=True, exist_ok=True)
    with open(args.output_file, "a") as f:
        f.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
