"""Seeded fuzzing of the request routes: every field of a valid body replaced by values of the
wrong type or range gets a 4xx, and random valid combinations of every feature all succeed.

Each case ends with the suite's nothing-lost checks (conftest.py: KV/radix invariant, canary
output unchanged, no traceback in the log). Found, before this file: ``top_k: 1e308`` passed
validation and crashed the sampler, whose failure path then corrupted the radix cache; integers
past 64 bits were 500s from msgpack; a non-object OpenAI ``logit_bias`` was a 500; a grammar
that finished before ``min_new_tokens`` failed its whole batch.
"""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.reliability.conftest import MAX_QUEUED, MAX_RUNNING, MODEL

pytestmark = pytest.mark.usefixtures("healthy_after")

WRONG_VALUES = [None, -1, 0, 1.5, 1e308, 2**64, "x", [], {}, [1, "a"], True, float("nan")]
VALID_BODIES = {
    "/generate": {
        "text": "Hello",
        "sampling_params": {
            "max_new_tokens": 2,
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 5,
            "min_p": 0.1,
            "min_new_tokens": 1,
            "n": 1,
            "stop": ["x"],
            "stop_token_ids": [1],
            "repetition_penalty": 1.1,
            "frequency_penalty": 0.1,
            "presence_penalty": 0.1,
            "logit_bias": {"5": 1.0},
            "sampling_seed": 1,
            "ignore_eos": False,
            "regex": "[a-z]+",
        },
        "return_logprob": True,
        "logprob_start_len": 0,
        "top_logprobs_num": 1,
        "stream": False,
        "rid": "fuzz",
    },
    "/v1/completions": {
        "model": MODEL,
        "prompt": "Hello",
        "max_tokens": 2,
        "temperature": 0.5,
        "top_p": 0.9,
        "n": 1,
        "stop": ["x"],
        "logprobs": 1,
        "echo": False,
        "seed": 1,
        "logit_bias": {"5": 1},
        "presence_penalty": 0.1,
        "frequency_penalty": 0.1,
        "stream": False,
    },
    "/v1/chat/completions": {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 2,
        "temperature": 0.5,
        "top_p": 0.9,
        "n": 1,
        "stop": "x",
        "logprobs": True,
        "top_logprobs": 1,
        "seed": 1,
        "response_format": {"type": "text"},
        "logit_bias": {"5": 1},
        "stream": False,
    },
}


def mutations():
    """(route, field path, body) with one field of a valid body replaced by a wrong value."""
    for route, body in VALID_BODIES.items():
        nested = [
            (key, sub) for key, value in body.items() if isinstance(value, dict) for sub in value
        ]
        for path in [(key,) for key in body] + nested:
            for wrong in WRONG_VALUES:
                mutated = json.loads(json.dumps(body))
                target = mutated
                for key in path[:-1]:
                    target = target[key]
                target[path[-1]] = wrong
                yield route, ".".join(path), mutated


def test_every_field_with_a_wrong_value_is_a_4xx(server):
    failures = []
    for route, field, body in mutations():
        res = server.post(route, body)
        if not 200 <= res.status_code < 500:
            failures.append((route, field, body, res.status_code, res.text[:200]))
    assert not failures, failures[:5]


def random_valid_body(rng: random.Random) -> dict:
    params: dict = {"max_new_tokens": rng.choice([0, 1, 3, 8, 16])}
    optional = {
        "temperature": [0, 0.7, 1.5],
        "top_p": [0.2, 1.0],
        "top_k": [-1, 1, 4, 2**40],
        "min_p": [0.0, 0.3],
        "repetition_penalty": [0.5, 1.5],
        "frequency_penalty": [-2, 1.5],
        "presence_penalty": [-1, 2],
        "stop": [".", ["\n", "e"]],
        "stop_token_ids": [[rng.randrange(49152)]],
        "ignore_eos": [True],
        "n": [2],
        "sampling_seed": [rng.randrange(2**63)],
        "logit_bias": [{str(rng.randrange(49152)): rng.choice([-100, 100])}],
        "skip_special_tokens": [False],
        "no_stop_trim": [True],
    }
    for key, choices in optional.items():
        if rng.random() < 0.2:
            params[key] = rng.choice(choices)
    if rng.random() < 0.2:
        params["min_new_tokens"] = rng.randint(0, params["max_new_tokens"])
    grammar = rng.random()
    if grammar < 0.15:
        params["regex"] = rng.choice(["(yes|no)", "[a-z]{1,6}", r"\d+\.\d\d"])
    elif grammar < 0.25:
        params["json_schema"] = json.dumps({"type": "array", "items": {"type": "boolean"}})
    body: dict = {"sampling_params": params}
    if rng.random() < 0.2:
        body["input_ids"] = [rng.randrange(49152) for _ in range(rng.randint(3, 20))]
    else:
        body["text"] = rng.choice(["The capital of France is", "1, 2, 3,", "def f(x):"])
    if rng.random() < 0.3:
        body.update(return_logprob=True, top_logprobs_num=rng.choice([0, 2]))
        body["logprob_start_len"] = rng.choice([-1, 0, 1])
    if rng.random() < 0.25 and params.get("n", 1) == 1:
        body["stream"] = True
    return body


def test_random_valid_requests_all_succeed(server):
    rng = random.Random(0)
    bodies = [random_valid_body(rng) for _ in range(80)]

    def send(body: dict):
        res = server.post("/generate", body)
        return body, res.status_code, res.text

    # Within the server's running + queued limits (n = 2 counts twice), so none is turned away.
    with ThreadPoolExecutor((MAX_RUNNING + MAX_QUEUED) // 2) as pool:
        results = list(pool.map(send, bodies))
    failures = [r for r in results if r[1] != 200 or '"abort"' in r[2]]
    assert not failures, failures[:5]
