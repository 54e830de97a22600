"""Soak: many short mixed requests against one server; memory of its processes per round.

Starts a server (default model), then sends ``--rounds`` rounds of ``--requests-per-round``
requests at ``--concurrency``: random prompts of 10-60 words, 1-16 output tokens, a third
streamed, a fifth with logprobs, a seventh under a regex. After each round it prints the status
codes seen, the round's wall time, and, after an 8 s pause, the resident memory (MB) of the
launcher and each of its children, so that growth over time shows as a trend. A server that
leaks or fragments memory grows round after round; a healthy one levels off after the first
rounds (the radix cache and the allocator's pools fill up once).

    .venv/bin/python benchmarks/bench_soak.py [--rounds 8] [--requests-per-round 600]
    .venv/bin/python benchmarks/bench_soak.py --env MALLOC_ARENA_MAX=2   # an environment variant
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from radixlm.runtime.process_utils import resident_bytes  # noqa: E402
from tests.reliability.processes import descendants  # noqa: E402
from tests.server_harness import ServerProcess  # noqa: E402

IDLE_PAUSE_S = 8.0


def request_body(index: int) -> dict:
    rng = random.Random(index)
    words = " ".join(str(rng.randrange(10_000)) for _ in range(rng.randrange(10, 60)))
    body: dict = {
        "text": f"Request {index}: {words}",
        "sampling_params": {"max_new_tokens": rng.randrange(1, 17), "temperature": 0.7},
        "stream": index % 3 == 0,
    }
    if index % 5 == 0:
        body |= {"return_logprob": True, "top_logprobs_num": 2}
    if index % 7 == 0:
        body["sampling_params"]["regex"] = "[a-z]{2,5}"
    return body


def send(url: str, index: int) -> int:
    body = request_body(index)
    response = requests.post(url + "/generate", json=body, timeout=300)
    if response.ok and body["stream"]:
        assert response.text.rstrip().endswith("data: [DONE]"), response.text[-200:]
    return response.status_code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests-per-round", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    parser.add_argument("server_args", nargs="*", help="extra server flags (after --)")
    args = parser.parse_args()

    env = dict(item.split("=", 1) for item in args.env)
    server = ServerProcess(*args.server_args, env=env)
    processes = [server.proc.pid, *descendants(server.proc.pid)]
    print(f"server flags {args.server_args or '(defaults)'} env {env or '(inherited)'}")
    print(f"processes {processes} (launcher first)")
    print("| round | requests | status codes | wall s | RSS MB per process | total MB |")
    print("|---|---|---|---|---|---|")
    try:
        with ThreadPoolExecutor(args.concurrency) as pool:
            for round_index in range(args.rounds):
                first = round_index * args.requests_per_round
                indices = range(first, first + args.requests_per_round)
                start = time.perf_counter()
                codes = collections.Counter(pool.map(lambda i: send(server.url, i), indices))
                wall = time.perf_counter() - start
                time.sleep(IDLE_PAUSE_S)  # the scheduler returns freed memory when it goes idle
                memory = [resident_bytes(pid) >> 20 for pid in processes]
                print(
                    f"| {round_index} | {first + args.requests_per_round} | {json.dumps(codes)} "
                    f"| {wall:.0f} | {memory} | {sum(memory)} |",
                    flush=True,
                )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
