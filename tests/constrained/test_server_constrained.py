"""Constrained decoding through the real server (default model, default grammar backend).

- Sampled outputs (temperature 1.0, two seeds) under regexes drawn from a random family fullmatch
  them; outputs stopped by the token limit are the only exceptions, reported.
- Sampled outputs (temperature 1.0, two seeds) under a CI-sized JSONSchemaBench sample validate
  with ``jsonschema``; outputs stopped by the token limit are the only exceptions, reported.
  The full run over many more schemas is ``benchmarks/jsonschemabench_sample_validity.py``.
- Bad specs (`(`, a lookaround, ``{"type": "nonsense"}``) are 400s within the compile time
  limit while plain requests sent beside them finish normally. A 40-deep ``anyOf`` is a 400 for
  the automaton backends (tests/constrained/test_compiler.py); llguidance, the default, enforces
  it in milliseconds, so the server answers it with output that follows the schema.
"""

from __future__ import annotations

import json
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor

from benchmarks.bench_grammar_common import schema_prompt
from benchmarks.jsonschemabench_sample_validity import validation_error
from tests.constrained.conftest import load_bench_file
from tests.constrained.test_compiler import deep_any_of
from tests.constrained.test_outlines_matcher import ATOMS

# Small schemas from eight groups, all compiled by the default backend (checked in the test).
SAMPLE = [
    "BFCL_java/BFCL_java_93.json",
    "BFCL_javascript/BFCL_javascript_46.json",
    "Github_easy/o44372.json",
    "Glaiveai2K/generate_password_7cc4d82d.json",
    "JME/JME_97.json",
    "MCPspec/PingRequest.json",
    "Snowplow/sp_233_Normalized.json",
    "WashingtonPost/wp_110_Normalized.json",
]
SEEDS = (0, 1)
COMPILE_LIMIT_S = 10.0  # the server's default --grammar-compile-timeout


def random_regex(rng: random.Random, depth: int = 3) -> str:
    """The family of test_outlines_matcher.py: atoms joined by concatenation, alternation,
    optional, bounded and unbounded repetition."""
    if depth == 0 or rng.random() < 0.1:
        return rng.choice(ATOMS)
    a, b = random_regex(rng, depth - 1), random_regex(rng, depth - 1)
    return rng.choice(
        [a + b, f"(?:{a}|{b})", f"(?:{a})?", f"(?:{a}){{1,{rng.randint(1, 3)}}}", f"(?:{a})*"]
    )


def test_sampled_outputs_fullmatch_random_regexes(default_server) -> None:
    rng = random.Random(0)
    jobs = [(random_regex(rng), seed) for _ in range(6) for seed in SEEDS]

    def one(job):
        pattern, seed = job
        params = {
            "temperature": 1.0,
            "sampling_seed": seed,
            "max_new_tokens": 32,
            "regex": pattern,
        }
        return default_server.generate({"text": "Write some text:", "sampling_params": params})

    with ThreadPoolExecutor(len(jobs)) as pool:
        responses = list(pool.map(one, jobs))
    stopped, by_length = 0, []
    for (pattern, seed), res in zip(jobs, responses, strict=True):
        assert res.status_code == 200, f"{pattern}: {res.text}"
        out = res.json()
        if out["meta_info"]["finish_reason"]["type"] == "length":
            by_length.append(f"{pattern} seed {seed}")
            continue
        stopped += 1
        assert re.fullmatch(pattern, out["text"]), (pattern, seed, out["text"])
    print(f"stopped and matching: {stopped}; stopped by the token limit: {by_length}")
    assert stopped >= len(jobs) // 2, by_length


def test_sampled_outputs_validate(default_server) -> None:
    jobs = [(name, load_bench_file(name)["schema"], seed) for name in SAMPLE for seed in SEEDS]

    def one(job):
        _, schema, seed = job
        params = {
            "temperature": 1.0,
            "sampling_seed": seed,
            "max_new_tokens": 160,
            "json_schema": json.dumps(schema),
        }
        return default_server.generate({"text": schema_prompt(schema), "sampling_params": params})

    with ThreadPoolExecutor(len(jobs)) as pool:
        responses = list(pool.map(one, jobs))
    stopped, by_length = 0, []
    for (name, schema, seed), res in zip(jobs, responses, strict=True):
        assert res.status_code == 200, f"{name}: {res.text}"
        out = res.json()
        if out["meta_info"]["finish_reason"]["type"] == "length":
            by_length.append(f"{name} seed {seed}")
            continue
        stopped += 1
        assert validation_error(schema, out["text"]) is None, (name, seed, out["text"])
    print(f"stopped and valid: {stopped}; stopped by the token limit: {by_length}")
    # Most outputs must stop on their own, or the check above proves little.
    assert stopped >= len(jobs) // 2, by_length


def test_bad_specs_are_400_while_plain_requests_finish(default_server) -> None:
    bad_params = [
        {"regex": "("},
        {"regex": "(?=a)b"},
        {"json_schema": json.dumps({"type": "nonsense"})},
    ]
    plain = {"text": "1, 2, 3,", "sampling_params": {"temperature": 0, "max_new_tokens": 24}}

    def timed(body):
        start = time.monotonic()
        res = default_server.generate(body)
        return res, time.monotonic() - start

    with ThreadPoolExecutor(len(bad_params) + 2) as pool:
        plains = [pool.submit(timed, plain) for _ in range(2)]
        bads = [
            pool.submit(timed, {"text": "x", "sampling_params": {"max_new_tokens": 8, **p}})
            for p in bad_params
        ]
        for params, future in zip(bad_params, bads, strict=True):
            res, seconds = future.result()
            assert res.status_code == 400, (params, res.text)
            assert seconds < COMPILE_LIMIT_S, (params, seconds)
        for future in plains:
            res, _ = future.result()
            assert res.status_code == 200, res.text
            assert res.json()["meta_info"]["finish_reason"]["type"] == "length"


def test_deep_any_of_is_enforced_by_the_default_backend(default_server) -> None:
    schema = deep_any_of(40)
    body = {
        "text": schema_prompt(schema),
        "sampling_params": {
            "temperature": 0,
            "max_new_tokens": 200,
            "json_schema": json.dumps(schema),
        },
    }
    res = default_server.generate(body)
    # A 200 is the time check too: a compile past the server's limit is answered with a 400, so
    # no wall-clock bound here (one would fail on a loaded CI machine, not on a slow compile).
    assert res.status_code == 200, res.text
    out = res.json()
    if out["meta_info"]["finish_reason"]["type"] != "length":
        assert validation_error(schema, out["text"]) is None, out["text"]
    else:  # cut mid-structure: still nothing but nested arrays of strings so far
        assert re.fullmatch(r'[\[\]", \n\w]*', out["text"]), out["text"]


def test_a_finished_grammar_outranks_min_new_tokens(default_server) -> None:
    # The grammar completes after a token or two; min_new_tokens cannot be met, and must not
    # push the request into a state where the grammar allows nothing (that was a 500).
    for seed in SEEDS:
        params = {
            "regex": "(yes|no)",
            "min_new_tokens": 10,
            "max_new_tokens": 16,
            "temperature": 1.0,
            "sampling_seed": seed,
        }
        res = default_server.generate({"text": "Is the sky blue?", "sampling_params": params})
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["text"] in ("yes", "no")
        assert body["meta_info"]["finish_reason"]["type"] == "stop"
