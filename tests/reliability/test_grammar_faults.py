"""Bad and pathological constraints fail their own request only: invalid specs are 400 at the
edge, a compile past --grammar-compile-timeout (8 s here) is a 400 while other requests keep
running, and a client leaving during a compile takes its request out of the grammar queue."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.reliability.conftest import AUTH, MODEL
from tests.reliability.raw_http import RawRequest

pytestmark = pytest.mark.usefixtures("healthy_after")

# A 20000-state automaton against a 49k-token vocabulary: ~2 minutes for outlines on this CPU.
SLOW_REGEX = "[a-z]{1,20000}"


def chat(content: str = "Hi", **extra) -> dict:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 8,
        "temperature": 0,
        **extra,
    }


@pytest.mark.parametrize("regex", ["(", "", "(?=a)b", "a\\1", "[z-a]"])
def test_invalid_regex_is_400_and_a_concurrent_request_completes(server, regex):
    plain = {"model": MODEL, "prompt": "1, 2, 3,", "max_tokens": 8, "temperature": 0}
    with ThreadPoolExecutor(2) as pool:
        good = pool.submit(server.post, "/v1/completions", plain)
        res = server.post("/v1/completions", {"model": MODEL, "prompt": "x", "regex": regex})
        assert res.status_code == 400 and res.json()["error"]["param"] == "regex", res.text
        assert good.result().status_code == 200
    native = server.post("/generate", {"text": "x", "sampling_params": {"regex": regex}})
    assert native.status_code == 400


@pytest.mark.parametrize(
    ("response_format", "param"),
    [
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}},
            "response_format",
        ),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"properties": {"a": "b"}}},
            },
            "response_format",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "x"}},
            "response_format.json_schema.schema",
        ),
        ({"type": "json_object", "json_object": False}, None),  # extra keys are ignored: valid
    ],
)
def test_invalid_json_schemas(server, response_format, param):
    res = server.post("/v1/chat/completions", chat(response_format=response_format))
    if param is None:
        assert res.status_code == 200, res.text
        return
    assert res.status_code == 400, res.text
    assert res.json()["error"]["param"] == param


def test_bad_tool_parameters_schema_is_blamed_on_tools(server):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}]
    res = server.post("/v1/chat/completions", chat(tools=tools, tool_choice="required"))
    assert res.status_code == 400 and res.json()["error"]["param"] == "tools", res.text


def test_grammar_that_times_out_fails_alone(server):
    plain = {"model": MODEL, "prompt": "1, 2, 3,", "max_tokens": 8, "temperature": 0}
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(
            server.post,
            "/v1/completions",
            {"model": MODEL, "prompt": "x", "max_tokens": 4, "regex": SLOW_REGEX},
        )
        time.sleep(0.3)
        started = time.monotonic()
        assert server.post("/v1/completions", plain).status_code == 200
        plain_s = time.monotonic() - started
        res = slow.result()
    assert res.status_code == 400, res.text
    assert "time" in res.json()["error"]["message"].lower()
    assert plain_s < 30, "a compiling grammar held up an unconstrained request"
    state = server.wait_idle()
    assert state["num_grammar_queue"] == 0


def test_client_leaving_while_its_grammar_compiles(server):
    before = server.wait_idle()
    body = {
        "model": MODEL,
        "prompt": "x",
        "max_tokens": 4,
        "regex": SLOW_REGEX + "0",
        "stream": True,
    }
    request = RawRequest(server.url, "/v1/completions", body, AUTH)
    deadline = time.monotonic() + 30
    while server.state()["num_grammar_queue"] == 0:
        assert time.monotonic() < deadline, "the request never reached the grammar queue"
        time.sleep(0.02)
    request.close()
    deadline = time.monotonic() + 10
    while (state := server.state())["num_grammar_queue"] != 0:
        assert time.monotonic() < deadline, f"still waiting for its grammar: {state}"
        time.sleep(0.05)
    assert state["aborted"] == before["aborted"] + 1
