"""Program workloads in the shapes of the SGLang paper, scaled to a CPU and the default model.

Each workload runs against two servers started side by side, one with the radix cache and one
with `--disable-radix-cache`, one after the other (never concurrently), and reports:

- programs/s (wall clock of the whole batch),
- prefill tokens computed (sum over responses of prompt_tokens - cached_tokens) vs the ideal:
  the number of distinct token prefixes over every prompt sent (a trie over the token ids), i.e.
  each distinct prefix computed exactly once,
- cache hit rate = cached_tokens / prompt_tokens.

Workloads (synthetic text, no dataset downloads):
  a. 20-shot classification prefix + select over 4 labels, 64 questions via run_batch
  b. multi-turn chat, 4 turns x 16 conversations (a shared system prompt)
  c. fork 3-way x depth 2 over a shared document, several programs

    python benchmarks/bench_programs.py [--workloads a,b,c] [--scale 1.0] [--json out.json]
    python benchmarks/bench_programs.py --url-cache URL --url-no-cache URL  # running servers
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import radixlm as rl

LABELS = ["sports", "science", "music", "politics"]
_WORDS = {
    "sports": "team match goal coach season player score league final stadium",
    "science": "experiment cell energy theory planet data laboratory molecule physics study",
    "music": "album song band concert guitar melody singer rhythm tour chorus",
    "politics": "election vote senate policy minister law campaign parliament debate party",
}
_FILLER = "the a of in on with for and today new big report after before".split()


def synthetic_sentence(rng: random.Random, label: str, num_words: int) -> str:
    topic_words = _WORDS[label].split()
    words = [rng.choice(topic_words if rng.random() < 0.5 else _FILLER) for _ in range(num_words)]
    return " ".join(words).capitalize() + "."


# ---- workloads: each returns (function, batch arguments, run kwargs) ----


def workload_classification(rng: random.Random, scale: float) -> tuple[Any, list[dict], dict]:
    shots = "".join(
        f"Text: {synthetic_sentence(rng, label, 18)}\nTopic: {label}\n\n"
        for label in (LABELS * 5)[:20]
    )

    @rl.function
    def classify(s, text):
        s += "Classify the topic of each text.\n\n" + shots
        s += "Text: " + text + "\nTopic: "
        s += rl.select("topic", choices=LABELS)

    num_questions = max(2, round(64 * scale))
    questions = [
        {"text": synthetic_sentence(rng, rng.choice(LABELS), 18)} for _ in range(num_questions)
    ]
    return classify, questions, {}


def workload_multi_turn(rng: random.Random, scale: float) -> tuple[Any, list[dict], dict]:
    system = "You are a helpful assistant. " + " ".join(
        synthetic_sentence(rng, label, 12) for label in LABELS * 3
    )

    @rl.function
    def conversation(s, turns):
        s += rl.system(system)
        for i, turn in enumerate(turns):
            s += rl.user(turn)
            s += rl.assistant(rl.gen(f"reply_{i}", max_tokens=8))

    num_conversations = max(2, round(16 * scale))
    batch = [
        {"turns": [synthetic_sentence(rng, rng.choice(LABELS), 30) for _ in range(4)]}
        for _ in range(num_conversations)
    ]
    return conversation, batch, {"temperature": 0}


def workload_fork_tree(rng: random.Random, scale: float) -> tuple[Any, list[dict], dict]:
    @rl.function
    def tree(s, document):
        s += "Document: " + document + "\nLet us consider three angles.\n"
        level1 = s.fork(3)
        for i, branch in enumerate(level1):
            branch += f"Angle {i + 1}:" + rl.gen("angle", max_tokens=6, stop="\n") + "\n"
            level2 = branch.fork(3)
            for j, leaf in enumerate(level2):
                leaf += f"Detail {j + 1}:" + rl.gen("detail", max_tokens=6, stop="\n")
            level2.join()
        level1.join()

    num_programs = max(1, round(4 * scale))
    batch = [
        {"document": " ".join(synthetic_sentence(rng, rng.choice(LABELS), 15) for _ in range(16))}
        for _ in range(num_programs)
    ]
    return tree, batch, {"temperature": 0}


WORKLOADS: dict[str, tuple[str, Callable[[random.Random, float], tuple[Any, list[dict], dict]]]] = {
    "a": ("20-shot select, 64 questions", workload_classification),
    "b": ("multi-turn chat 4x16", workload_multi_turn),
    "c": ("fork 3-way x depth 2", workload_fork_tree),
}


# ---- measurement ----


class RecordingEndpoint(rl.RuntimeEndpoint):
    """A RuntimeEndpoint that also keeps every prompt it sent (for the ideal prefill count)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.prompts: list[str] = []
        self._lock = threading.Lock()

    def _record(self, body: dict) -> None:
        texts = body.get("text")
        with self._lock:
            self.prompts += texts if isinstance(texts, list) else [texts]

    def _generate(self, body: dict) -> Any:
        self._record(body)
        return super()._generate(body)

    def _generate_events(self, body: dict) -> Iterator[dict]:
        self._record(body)
        return super()._generate_events(body)


def ideal_prefill_tokens(prompts: list[str], encode: Callable[[str], list[int]]) -> int:
    """Distinct token prefixes over all prompts: each computed once by a perfect prefix cache."""
    root: dict = {}
    count = 0
    for prompt in prompts:
        node = root
        for token in encode(prompt):
            if token not in node:
                node[token] = {}
                count += 1
            node = node[token]
    return count


@dataclass
class Result:
    workload: str
    cache: str
    num_programs: int
    seconds: float
    programs_per_s: float
    num_requests: int
    prompt_tokens: int
    cached_tokens: int
    computed_prefill_tokens: int
    ideal_prefill_tokens: int
    hit_rate: float


def run_workload(
    key: str, endpoint: RecordingEndpoint, cache: str, scale: float, encode: Callable
) -> Result:
    rng = random.Random(0)  # the same programs on both servers
    function, batch, kwargs = WORKLOADS[key][1](rng, scale)
    rl.flush_cache(endpoint)
    endpoint.token_usage.reset()
    endpoint.prompts.clear()
    start = time.perf_counter()
    states = function.run_batch(batch, backend=endpoint, **kwargs)
    seconds = time.perf_counter() - start
    errors = [state.error() for state in states if state.error() is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} programs failed; first: {errors[0]!r}")
    usage = endpoint.token_usage.snapshot()
    return Result(
        workload=key,
        cache=cache,
        num_programs=len(batch),
        seconds=round(seconds, 2),
        programs_per_s=round(len(batch) / seconds, 3),
        num_requests=usage.num_requests,
        prompt_tokens=usage.prompt_tokens,
        cached_tokens=usage.cached_tokens,
        computed_prefill_tokens=usage.computed_prompt_tokens,
        ideal_prefill_tokens=ideal_prefill_tokens(endpoint.prompts, encode),
        hit_rate=round(usage.cache_hit_rate, 3),
    )


def load_encoder(endpoint: rl.RuntimeEndpoint) -> Callable[[str], list[int]]:
    """The served model's own tokenizer, from the folder /get_model_info names."""
    from tokenizers import Tokenizer

    tokenizer_path = Path(endpoint.model_info["tokenizer_path"]) / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    return lambda text: tokenizer.encode(text, add_special_tokens=False).ids


def markdown_table(results: list[Result]) -> str:
    lines = [
        "| workload | radix cache | programs | s | programs/s | prefill computed | ideal | "
        "hit rate | speedup |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(r.workload, r.cache): r for r in results}
    for r in results:
        other = by_key.get((r.workload, "off"))
        speedup = (
            f"{r.programs_per_s / other.programs_per_s:.2f}x" if r.cache == "on" and other else ""
        )
        lines.append(
            f"| {r.workload}: {WORKLOADS[r.workload][0]} | {r.cache} | {r.num_programs} | "
            f"{r.seconds} | {r.programs_per_s} | {r.computed_prefill_tokens} | "
            f"{r.ideal_prefill_tokens} | {r.hit_rate:.1%} | {speedup} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--workloads", default="a,b,c")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the batch sizes")
    parser.add_argument("--url-cache", help="a running server with the radix cache")
    parser.add_argument("--url-no-cache", help="a running server with --disable-radix-cache")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    keys = args.workloads.split(",")

    runtimes: list[rl.Runtime] = []
    try:
        if args.url_cache and args.url_no_cache:
            urls = {"on": args.url_cache, "off": args.url_no_cache}
        else:
            print("launching two servers (radix cache on / off)...", file=sys.stderr)
            runtimes = [
                rl.Runtime(log_level="warning"),
                rl.Runtime(disable_radix_cache=True, log_level="warning"),
            ]
            urls = {"on": runtimes[0].url, "off": runtimes[1].url}
        endpoints = {mode: RecordingEndpoint(url) for mode, url in urls.items()}
        encode = load_encoder(endpoints["on"])
        results = []
        for key in keys:
            for mode in ("on", "off"):
                result = run_workload(key, endpoints[mode], mode, args.scale, encode)
                print(json.dumps(asdict(result)), file=sys.stderr)
                results.append(result)
    finally:
        for runtime in runtimes:
            runtime.shutdown()
    print(markdown_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
