"""OpenAI error JSON and status codes for bad input, through the `openai` client and raw HTTP."""

from __future__ import annotations

import openai
import pytest
import requests

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def client(default_server) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=default_server.url + "/v1", api_key="unused", max_retries=0, timeout=300
    )


def error_of(res: requests.Response) -> dict:
    error = res.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == res.status_code
    return error


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": -1}, "temperature"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"n": 100000}, "n"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"logprobs": True, "top_logprobs": 1000}, "top_logprobs"),
        ({"logit_bias": {"10000000": 5}}, "logit_bias"),
        ({"logit_bias": -1}, "logit_bias"),  # not an object: was a 500
        ({"logit_bias": True}, "logit_bias"),
        ({"stop": ["x"] * 1000}, "stop"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"extra_body": {"top_k": 0}}, "top_k"),
        ({"extra_body": {"repetition_penalty": 0}}, "repetition_penalty"),
    ],
)
def test_chat_field_errors_are_400_naming_the_field(client, extra, param):
    extra_body = extra.pop("extra_body", None)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=HI, extra_body=extra_body, **extra)
    error = caught.value.body
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert param.split(".")[0] in error["message"]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ([{"role": "wizard", "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": 3}], "messages[0].content"),
    ],
)
def test_bad_messages(client, messages, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=messages)
    assert caught.value.body["param"] == param


@pytest.mark.parametrize(
    ("prompt", "param"),
    [("", "prompt"), ([], "prompt"), ([5, 10**7], "prompt"), ([[1], [-1]], "prompt[1]")],
)
def test_bad_prompts(client, prompt, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt=prompt)
    assert caught.value.body["param"] == param


def test_context_overflow_message(client, default_server):
    info = requests.get(default_server.url + "/v1/models", timeout=30).json()["data"][0]
    limit = info["max_model_len"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="hello", max_tokens=limit)
    message = caught.value.body["message"]
    assert f"maximum context length is {limit} tokens" in message
    assert caught.value.body["param"] == "prompt"
    long_text = "word " * (limit + 10)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": long_text}]
        )
    assert f"maximum context length is {limit} tokens" in caught.value.body["message"]
    assert caught.value.body["param"] == "messages"


def test_unknown_model_and_route_are_404_json(client, default_server):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=HI)
    assert caught.value.body["param"] == "model" and "gpt-4o" in caught.value.body["message"]
    res = requests.post(default_server.url + "/v1/embeddings", json={}, timeout=30)
    assert res.status_code == 404 and error_of(res)["type"] == "not_found_error"


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize(
    "raw",
    [
        b'"abc{{"',
        b"[1, 2]",
        b"42",
        b"null",
        b"{not json",
        b'{"prompt": "\xff\xfe"}',
        b'{"prompt": "a\\ud800b", "messages": [{"role": "user", "content": "\\udfff"}]}',
    ],
)
def test_bodies_that_are_not_valid_objects_are_400(default_server, route, raw):
    res = requests.post(
        default_server.url + route,
        data=raw,
        timeout=30,
        headers={"content-type": "application/json"},
    )
    assert res.status_code == 400, res.text
    error_of(res)


def test_lone_surrogates_are_named(default_server):
    raw = b'{"model": "m", "messages": [{"role": "user", "content": "x\\ud800"}]}'
    res = requests.post(
        default_server.url + "/v1/chat/completions",
        data=raw,
        timeout=30,
        headers={"content-type": "application/json"},
    )
    assert res.status_code == 400
    assert error_of(res)["param"] == "messages[0].content"
    raw = b'{"prompt": "ok", "stop": ["\\udc80"]}'
    res = requests.post(default_server.url + "/v1/completions", data=raw, timeout=30)
    assert res.status_code == 400 and error_of(res)["param"] == "stop[0]"


def test_oversized_body_is_413_before_parsing(default_server):
    big = b'{"prompt": "' + b"a" * (33 * 1024 * 1024) + b'"}'
    res = requests.post(default_server.url + "/v1/completions", data=big, timeout=120)
    assert res.status_code == 413 and error_of(res)["type"] == "request_too_large"


def test_suffix_and_best_of_are_refused_not_ignored(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="a", suffix="b")
    assert caught.value.body["param"] == "suffix"
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="a", best_of=3)
    assert caught.value.body["param"] == "best_of"
