"""Clients that go away (streaming or not, running or queued) abort their requests promptly; the
KV they held is freed and their partial output never enters the radix cache."""

from __future__ import annotations

import time

import pytest

from tests.reliability.conftest import AUTH, MAX_RUNNING, MODEL
from tests.reliability.raw_http import RawRequest

pytestmark = pytest.mark.usefixtures("healthy_after")

LONG = 120  # output tokens a request would make if nobody stopped it


def completion(prompt: str, stream: bool, max_tokens: int = LONG) -> dict:
    return {
        "model": MODEL,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
    }


def wait_for(server, predicate, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = server.state()
        if predicate(state):
            return state
        assert time.monotonic() < deadline, f"condition not reached: {state}"
        time.sleep(0.05)


def test_streaming_clients_leaving_after_three_chunks(server):
    before = server.wait_idle()
    for round_ in range(2):
        streams = [
            RawRequest(
                server.url,
                "/v1/completions",
                completion(f"Stream {round_}-{i}: once upon a time", True),
                AUTH,
            )
            for i in range(3)
        ]
        for stream in streams:
            stream.read_events(3)
        for stream in streams:
            stream.close()
        wait_for(server, lambda s: s["num_running"] == 0 and s["num_waiting"] == 0)
    after = server.wait_idle()
    assert after["aborted"] - before["aborted"] == 6
    # Each stream was stopped long before its 120 tokens.
    assert after["generation_tokens"] - before["generation_tokens"] < 6 * LONG // 2
    # Prompts enter the radix cache once prefilled; the aborted partial outputs must not.
    new_prompt_tokens = after["prompt_tokens"] - before["prompt_tokens"]
    assert after["cached"] - before["cached"] <= new_prompt_tokens, "aborted output KV was cached"


def test_native_stream_disconnect(server):
    before = server.wait_idle()
    body = {
        "text": "Tell me a story.",
        "stream": True,
        "sampling_params": {"max_new_tokens": LONG, "ignore_eos": True},
    }
    stream = RawRequest(server.url, "/generate", body, AUTH)
    stream.read_events(2)
    stream.close()
    after = wait_for(server, lambda s: s["aborted"] > before["aborted"] and s["num_running"] == 0)
    assert after["generation_tokens"] - before["generation_tokens"] < LONG // 2


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", completion("A long answer:", False)),
        (
            "/v1/chat/completions",
            {
                "model": MODEL,
                "max_tokens": LONG,
                "ignore_eos": True,
                "messages": [{"role": "user", "content": "Talk a lot."}],
            },
        ),
        (
            "/generate",
            {
                "text": "A long answer:",
                "sampling_params": {"max_new_tokens": LONG, "ignore_eos": True},
            },
        ),
    ],
)
def test_non_streaming_client_leaving_mid_decode(server, path, body):
    before = server.wait_idle()
    request = RawRequest(server.url, path, body, AUTH)
    wait_for(server, lambda s: s["generation_tokens"] > before["generation_tokens"] + 2)
    request.close()
    after = wait_for(server, lambda s: s["aborted"] > before["aborted"] and s["num_running"] == 0)
    assert after["generation_tokens"] - before["generation_tokens"] < LONG // 2


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", completion("Queued:", False)),
        ("/v1/completions", completion("Queued:", True)),
        (
            "/generate",
            {
                "text": "Queued:",
                "stream": True,
                "sampling_params": {"max_new_tokens": LONG, "ignore_eos": True},
            },
        ),
    ],
)
def test_queued_client_leaving_before_it_ran(server, path, body):
    before = server.wait_idle()
    runners = [
        RawRequest(server.url, "/v1/completions", completion(f"Runner {i}:", True, 30), AUTH)
        for i in range(MAX_RUNNING)
    ]
    wait_for(server, lambda s: s["num_running"] == MAX_RUNNING)
    queued = RawRequest(server.url, path, body, AUTH)
    wait_for(server, lambda s: s["num_waiting"] == 1)
    queued.close()
    state = wait_for(server, lambda s: s["num_waiting"] == 0)
    assert state["aborted"] == before["aborted"] + 1
    for runner in runners:  # the running requests were not disturbed
        events = runner.read_to_done()
        assert events[-1]["choices"][0]["finish_reason"] == "length"
        runner.close()


def test_abort_request_by_rid_and_abort_all(server):
    before = server.wait_idle()
    bodies = [
        {
            "text": f"Count {i}:",
            "rid": f"victim-{i}",
            "stream": True,
            "sampling_params": {"max_new_tokens": LONG, "ignore_eos": True},
        }
        for i in range(3)
    ]
    streams = [RawRequest(server.url, "/generate", b, AUTH) for b in bodies]
    for stream in streams:
        stream.read_events(1)
    assert server.post("/abort_request", {"rid": "victim-0"}).status_code == 200
    finish = _last_finish(streams[0])
    assert finish["type"] == "abort"
    assert server.post("/abort_request", {"abort_all": True}).status_code == 200
    assert [_last_finish(s)["type"] for s in streams[1:]] == ["abort", "abort"]
    after = server.wait_idle()
    assert after["aborted"] - before["aborted"] == 3


def _last_finish(stream: RawRequest) -> dict:
    events = stream.read_to_done()
    stream.close()
    return events[-1]["meta_info"]["finish_reason"]
