"""Overload degrades, never crashes: a full queue answers 503 + Retry-After at once, a full KV
pool retracts requests without changing their greedy outputs, and busy-time admin calls are
refused cleanly."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.reliability.conftest import MAX_QUEUED, MAX_RUNNING, MODEL

pytestmark = pytest.mark.usefixtures("healthy_after")


def test_burst_of_50_with_a_queue_of_4(server):
    before = server.get("/metrics").text
    body = {
        "model": MODEL,
        "prompt": "Hello, my name is",
        "max_tokens": 16,
        "temperature": 0,
        "ignore_eos": True,
    }
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: server.post("/v1/completions", body), range(50)))
    accepted = [r for r in results if r.status_code == 200]
    rejected = [r for r in results if r.status_code != 200]
    assert len(accepted) + len(rejected) == 50
    assert len(accepted) >= MAX_RUNNING + MAX_QUEUED and len(rejected) >= 25
    for res in rejected:
        assert res.status_code == 503 and res.headers["Retry-After"] == "1"
        assert res.json()["error"]["type"] == "service_unavailable"
    texts = {r.json()["choices"][0]["text"] for r in accepted}
    assert len(texts) == 1 and all(r.json()["usage"]["completion_tokens"] == 16 for r in accepted)
    after = server.get("/metrics").text
    assert _counter(after, "num_rejected_requests_total") - _counter(
        before, "num_rejected_requests_total"
    ) == len(rejected)


def _counter(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(f"radixlm:{name}{{")]
    return float(line.rsplit(" ", 1)[1])


def test_kv_exhaustion_retracts_and_keeps_greedy_outputs(server):
    # 3 x (10 prompt + 90 output) tokens cannot all fit in the 256-token pool.
    prompts = [f"Write the numbers from {i} upward: {i}," for i in range(3)]

    def run(prompt: str) -> list[int]:
        body = {
            "text": prompt,
            "sampling_params": {"temperature": 0, "max_new_tokens": 90, "ignore_eos": True},
        }
        res = server.post("/generate", body)
        assert res.status_code == 200, res.text
        return res.json()["output_ids"]

    solo = [run(p) for p in prompts]
    before = server.wait_idle()
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(run, prompts))
    after = server.wait_idle()
    assert after["retractions"] > before["retractions"], "the pool never ran out"
    assert together == solo


def test_flush_cache_is_refused_while_busy_and_works_when_idle(server):
    body = {"text": "Busy work:", "sampling_params": {"max_new_tokens": 60, "ignore_eos": True}}
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(server.post, "/generate", body)
        while server.state()["num_running"] == 0 and not running.done():
            time.sleep(0.02)
        refused = server.post("/flush_cache", {})
        assert running.result().status_code == 200
    assert refused.status_code == 400 and "running" in refused.json()["error"]["message"]
    server.wait_idle()
    assert server.post("/flush_cache", {}).status_code == 200
    assert server.state()["cached"] == 0


def test_many_mixed_requests_share_prefixes_without_leaks(server):
    prefix = "Background: " + " ".join(f"fact {i} is true." for i in range(20))
    bodies = [
        {"model": MODEL, "prompt": f"{prefix} Question {i}?", "max_tokens": 6, "temperature": 0}
        for i in range(6)
    ]
    solo = [server.post("/v1/completions", b).json()["choices"][0]["text"] for b in bodies]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda b: server.post("/v1/completions", b).json(), bodies))
    assert [r["choices"][0]["text"] for r in together] == solo
    assert max(r["usage"]["prompt_tokens_details"]["cached_tokens"] for r in together) > 20


def test_a_batch_that_does_not_fit_the_queue_is_refused_whole(server):
    """A refused batch must not leave its first items admitted with nobody waiting for them."""
    blocker = {
        "text": "Hold:",
        "stream": True,
        "sampling_params": {"max_new_tokens": 40, "ignore_eos": True},
    }
    batch = {"text": [f"Item {i}:" for i in range(3)], "sampling_params": {"max_new_tokens": 4}}
    with ThreadPoolExecutor(MAX_RUNNING + MAX_QUEUED) as pool:
        holders = [
            pool.submit(server.post, "/generate", blocker)
            for _ in range(MAX_RUNNING + MAX_QUEUED - 2)
        ]
        while _gauge(server, "num_inflight_reqs") < MAX_RUNNING + MAX_QUEUED - 2:
            time.sleep(0.02)
        refused = server.post("/generate", batch)  # 3 items, 2 free places
        assert refused.status_code == 503
        assert all(h.result().status_code == 200 for h in holders)
    server.wait_idle()
    assert _gauge(server, "num_inflight_reqs") == 0, "requests of a refused batch were stranded"


def _gauge(server, name: str) -> float:
    return _counter(server.get("/metrics").text, name)
