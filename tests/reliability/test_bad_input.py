"""Bad input of every kind gets a 4xx naming the problem, never a 500, and disturbs nothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.reliability.conftest import AUTH, MODEL, POOL_TOKENS

pytestmark = pytest.mark.usefixtures("healthy_after")

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def expect_400(server, path: str, body, param: str | None = None) -> dict:
    res = server.post(path, body)
    assert res.status_code == 400, (body, res.status_code, res.text)
    error = res.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == 400
    if param is not None:
        assert error["param"] == param, (body, error)
    return error


def test_empty_prompts_messages_and_ids(server):
    expect_400(server, COMPLETIONS, {"model": MODEL, "prompt": ""}, "prompt")
    expect_400(server, COMPLETIONS, {"model": MODEL, "prompt": []}, "prompt")
    expect_400(server, CHAT, {"model": MODEL, "messages": []}, "messages")
    expect_400(server, "/generate", {"text": ""}, "text")
    expect_400(server, "/generate", {"input_ids": []}, "input_ids")


def test_out_of_vocabulary_negative_and_float_token_ids(server):
    for prompt in ([999999], [-1], [1.5, 2.0], [[1, 2], [3, -7]]):
        expect_400(server, COMPLETIONS, {"model": MODEL, "prompt": prompt})
    for ids in ([999999], [-1], [1.5]):
        expect_400(server, "/generate", {"input_ids": ids}, "input_ids")


def test_bodies_that_are_not_json_objects(server):
    for path in (CHAT, COMPLETIONS, "/generate"):
        for raw in (b"abc{{", b"[1, 2]", b"42", b"null", b'"text"', b"", b"[" * 100000):
            res = requests.post(server.url + path, data=raw, headers=AUTH, timeout=60)
            assert res.status_code == 400, (path, raw[:20], res.text)
        res = requests.post(
            server.url + path, data=b"prompt=hi", timeout=60,
            headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        assert res.status_code == 400


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"max_tokens": 1e12}, "prompt"),  # an integer, but past the context
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 0}, "top_k"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"n": 0}, "n"),
        ({"n": 100000}, "n"),
        ({"logprobs": -1}, "logprobs"),
        ({"logprobs": 1000}, "logprobs"),
        ({"seed": 1.5}, "seed"),
        ({"temperature": float("nan")}, "temperature"),  # Python's JSON reader accepts NaN
        ({"top_p": float("inf")}, "top_p"),
    ],
)
def test_numeric_ranges_are_checked_with_the_field_named(server, extra, param):
    body = {"model": MODEL, "prompt": "hi", **extra}
    error = expect_400(server, COMPLETIONS, body, param)
    assert param in error["message"] or "context length" in error["message"]


def test_context_overflow_and_requests_that_can_never_fit(server):
    long_prompt = "hello " * (POOL_TOKENS + 50)
    error = expect_400(server, COMPLETIONS, {"model": MODEL, "prompt": long_prompt}, "prompt")
    assert f"maximum context length is {POOL_TOKENS} tokens" in error["message"]
    error = expect_400(
        server, COMPLETIONS, {"model": MODEL, "prompt": "hi", "max_tokens": POOL_TOKENS}
    )
    assert "maximum context length" in error["message"]
    messages = [{"role": "user", "content": long_prompt}]
    error = expect_400(server, CHAT, {"model": MODEL, "messages": messages}, "messages")
    assert "maximum context length" in error["message"]
    expect_400(
        server, "/generate", {"text": "hi", "sampling_params": {"max_new_tokens": POOL_TOKENS}}
    )


def test_caps_on_n_top_logprobs_and_stop_lists(server):
    expect_400(
        server,
        CHAT,
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "x"}],
            "logprobs": True,
            "top_logprobs": 1000,
        },
        "top_logprobs",
    )
    expect_400(server, COMPLETIONS, {"model": MODEL, "prompt": "x", "n": 100000}, "n")
    expect_400(server, COMPLETIONS, {"model": MODEL, "prompt": "x", "stop": ["a"] * 100000}, "stop")


def test_lone_surrogates_and_invalid_utf8(server):
    cases = [
        (COMPLETIONS, b'{"prompt": "a\\ud800b"}', "prompt"),
        (COMPLETIONS, b'{"prompt": "ok", "stop": ["\\udfff"]}', "stop[0]"),
        (CHAT, b'{"messages": [{"role": "user", "content": "\\ud83d"}]}', "messages[0].content"),
        ("/generate", b'{"text": "\\udc00"}', "text"),
        (COMPLETIONS, b'{"prompt": "\xc3\x28"}', "body"),
        (CHAT, b'{"messages": "\xff\xfe\xfd"}', "body"),
    ]
    for path, raw, param in cases:
        res = requests.post(server.url + path, data=raw, headers=AUTH, timeout=60)
        assert res.status_code == 400, (path, raw, res.text)
        assert res.json()["error"]["param"] == param


def test_oversized_bodies_are_413(server):
    big = b'{"prompt": "' + b"a" * (33 * 1024 * 1024) + b'"}'
    res = requests.post(server.url + COMPLETIONS, data=big, headers=AUTH, timeout=120)
    assert res.status_code == 413 and res.json()["error"]["type"] == "request_too_large"

    def chunked():  # no Content-Length: the limit must hold while reading
        for _ in range(40):
            yield b"a" * (1024 * 1024)

    res = requests.post(server.url + "/generate", data=chunked(), headers=AUTH, timeout=120)
    assert res.status_code == 413


def test_unknown_roles_models_and_routes(server):
    expect_400(server, CHAT, {"messages": [{"role": "root", "content": "x"}]}, "messages[0].role")
    res = server.post(CHAT, {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]})
    assert res.status_code == 404 and res.json()["error"]["param"] == "model"
    res = server.post("/v1/engines/davinci/completions", {})
    assert res.status_code == 404 and res.json()["error"]["code"] == 404


def test_bad_requests_do_not_disturb_concurrent_good_ones(server):
    good = {
        "model": MODEL,
        "prompt": "1, 2, 3,",
        "max_tokens": 12,
        "temperature": 0,
        "ignore_eos": True,
    }
    bad = [
        {"prompt": ""},
        {"prompt": [10**9]},
        {"prompt": "x", "top_p": -1},
        {"prompt": "x", "regex": "("},
    ]
    with ThreadPoolExecutor(8) as pool:
        goods = [pool.submit(server.post, COMPLETIONS, good) for _ in range(3)]
        bads = [pool.submit(server.post, COMPLETIONS, b) for b in bad]
        assert [f.result().status_code for f in bads] == [400] * len(bad)
        assert all(f.result().json()["usage"]["completion_tokens"] == 12 for f in goods)
