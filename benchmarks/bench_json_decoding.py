"""End-to-end JSON decoding (issue 4): jump-forward on vs off, constrained vs unconstrained.

Sends 32 concurrent greedy "character profile" requests (a schema with long forced keys) to a
server with jump-forward on and one with ``--disable-jump-forward``, for each JSON layout asked
for: ``default`` (our bounded whitespace, one optional space or newline between tokens, so the
model picks the layout) and ``compact`` (``--constrained-json-compact``: no whitespace, so every
key, quote, colon and comma is forced; the fixed layout SGLang's own jump-forward benchmark
regex uses). All servers stay up and the runs interleave ``--repeats`` times, so the VM's drift
falls on every kind alike. Reported per layout: the median run's output tok/s (every run's too),
the jump-forwarded share, and whether the parsed JSON is identical with jump-forward on and off
(when neither output parses, both stopped by the token limit, their texts must be equal; the
first differing token of each differing pair is printed). The same prompts are also sent
unconstrained for the constrained/unconstrained ratio. Load averages are recorded beside the
figures: this is a shared 2-core machine.

    .venv/bin/python benchmarks/bench_json_decoding.py [--layouts default,compact] [--repeats 5]
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
        "character_age_in_years": {"type": "integer", "minimum": 0, "maximum": 150},
        "character_home_town": {"type": "string", "maxLength": 40},
        "character_favourite_weapon": {"type": "string", "enum": ["sword", "bow", "axe", "staff"]},
        "character_is_still_alive": {"type": "boolean"},
        "character_strength_from_one_to_ten": {"type": "integer", "minimum": 1, "maximum": 10},
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


LAYOUT_FLAGS = {"default": [], "compact": ["--constrained-json-compact"]}


def median_run(runs: list[dict]) -> dict:
    """The median run by tok/s; its outputs are the ones compared."""
    return sorted(runs, key=lambda r: r["tok_per_s"])[len(runs) // 2]


def median_of(runs: list[dict], key: str) -> float:
    return sorted(r[key] for r in runs)[len(runs) // 2]


def same_output(a: dict, b: dict) -> bool:
    pa, pb = parsed(a), parsed(b)
    if pa is None and pb is None:
        return a["text"] == b["text"]
    return pa == pb


def without_bounds(schema: dict) -> dict:
    """The schema with no minimum / maximum on its integers (the earlier runs' schema): the
    greedy model then loops on one (``"..._one_to_ten": 1000000...``) to the token limit."""
    properties = {
        key: {k: v for k, v in spec.items() if k not in ("minimum", "maximum")}
        for key, spec in schema["properties"].items()
    }
    return {**schema, "properties": properties}


def compare_layout(layout: str, all_runs: dict[str, list[dict]]) -> dict:
    """One layout's figures: on/off and constrained/unconstrained ratios, outputs compared."""
    on_runs, off_runs = all_runs[f"{layout}_on"], all_runs[f"{layout}_off"]
    free_runs = all_runs["unconstrained"]
    on, off = median_run(on_runs)["outputs"], median_run(off_runs)["outputs"]
    for i, (a, b) in enumerate(zip(on, off, strict=True)):
        if not same_output(a, b):
            pairs = zip(a["output_ids"], b["output_ids"], strict=False)
            k = next((j for j, (x, y) in enumerate(pairs) if x != y), None)
            print(
                f"{layout}: differs #{i} at output token {k}:\n  on:  {a['text']!r}\n"
                f"  off: {b['text']!r}"
            )
    same = sum(same_output(a, b) for a, b in zip(on, off, strict=True))
    valid = sum(parsed(a) is not None for a in on)

    def ratio(a: list[dict], b: list[dict], key: str) -> float:
        return round(median_of(a, key) / median_of(b, key), 2)

    return {
        f"{layout}_speedup_jump_forward": ratio(on_runs, off_runs, "tok_per_s"),
        f"{layout}_speedup_jump_forward_cpu_s": ratio(on_runs, off_runs, "tok_per_cpu_s"),
        f"{layout}_constrained_vs_unconstrained": ratio(on_runs, free_runs, "tok_per_s"),
        f"{layout}_constrained_vs_unconstrained_cpu_s": ratio(on_runs, free_runs, "tok_per_cpu_s"),
        f"{layout}_jumped_share_on": round(median_run(on_runs)["jumped_share"], 3),
        f"{layout}_valid_json_on": f"{valid}/{len(on)}",
        f"{layout}_same_parsed_json_on_off": f"{same}/{len(on)}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--output-file", default="benchmarks/results/json_decoding.jsonl")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--layouts", default="default,compact", help="of " + str(list(LAYOUT_FLAGS))
    )
    parser.add_argument(
        "--unbounded-integers",
        action="store_true",
        help="drop the integers' minimum / maximum (the earlier runs' schema)",
    )
    parser.add_argument(
        "--server-flags", default="", help='extra server flags, e.g. "--quantization none"'
    )
    args = parser.parse_args()
    texts = prompts(args.concurrency)
    layouts = args.layouts.split(",")
    schema = without_bounds(CHARACTER_SCHEMA) if args.unbounded_integers else CHARACTER_SCHEMA
    # Every server stays up (an idle one blocks on its inbox) and the runs interleave, so load
    # from other jobs on this shared machine drifts over every kind of run alike.
    servers: dict[str, ServerProcess] = {}
    plan = [(f"{layout}_{jump}", schema) for layout in layouts for jump in ("on", "off")]
    plan.append(("unconstrained", None))  # on the first layout's jump-forward server
    try:
        for layout in layouts:
            for jump, flags in (("on", []), ("off", ["--disable-jump-forward"])):
                server = ServerProcess(
                    "--max-total-tokens", "32768", *args.server_flags.split(),
                    *LAYOUT_FLAGS[layout], *flags,
                )  # fmt: skip
                servers[f"{layout}_{jump}"] = server
                run_batch(server, texts[:2], 16, schema)  # warm-up: compile
        servers["unconstrained"] = servers[f"{layouts[0]}_on"]
        all_runs: dict[str, list[dict]] = {tag: [] for tag, _ in plan}
        for _ in range(args.repeats):
            for tag, run_schema in plan:
                requests.post(servers[tag].url + "/flush_cache", timeout=60)
                print(tag, end=": ", flush=True)
                all_runs[tag].append(
                    run_batch(servers[tag], texts, args.max_new_tokens, run_schema)
                )
    finally:
        for server in set(servers.values()):
            server.stop()
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
        "bounded_integers": not args.unbounded_integers,
        "repeats": args.repeats,
        **{
            f"{tag}_tok_per_s": round(median_run(rs)["tok_per_s"], 1)
            for tag, rs in all_runs.items()
        },
        **{
            f"{tag}_tok_per_s_runs": [round(r["tok_per_s"], 1) for r in rs]
            for tag, rs in all_runs.items()
        },
        **{
            f"{tag}_tok_per_cpu_s_runs": [round(r["tok_per_cpu_s"], 1) for r in rs]
            for tag, rs in all_runs.items()
        },
        **{k: v for layout in layouts for k, v in compare_layout(layout, all_runs).items()},
        "load_avg_1m_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary, indent=2))
    Path(args.output_file).parent.mkdir(parents=True, exist_ok=True)
    with open(args.output_file, "a") as f:
        f.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
