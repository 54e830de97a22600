"""The OpenAI backend: chat and completion bodies, streaming, select, and what it refuses."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from lang_fake_openai import FakeOpenAIServer

import radixlm as rl


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    server = FakeOpenAIServer()
    yield server
    server.close()


@rl.function
def chat(s, question):
    s += rl.system("Be brief.")
    s += rl.user(question)
    s += rl.assistant(rl.gen("answer", max_tokens=32, temperature=0))
    s += rl.user("Thanks!")
    s += rl.assistant(rl.gen("reply", max_tokens=8))


def test_chat_model_sends_messages(openai_server):
    backend = rl.OpenAI("gpt-4o-mini", base_url=openai_server.url, api_key="k")
    assert backend.is_chat_model
    state = chat.run("Hi?", backend=backend)
    assert state["answer"] == "Hello there"
    assert state.messages()[2] == {"role": "assistant", "content": "Hello there"}
    (path1, first), (path2, second) = openai_server.requests
    assert path1 == path2 == "/v1/chat/completions"
    assert first == {
        "model": "gpt-4o-mini",
        "max_tokens": 32,
        "n": 1,
        "stop": None,
        "temperature": 0,
        "top_p": 1.0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi?"},
        ],
    }
    assert len(second["messages"]) == 4
    assert backend.token_usage.snapshot().prompt_tokens == 10


def test_chat_json_schema_becomes_response_format(openai_server):
    backend = rl.OpenAI("gpt-4o-mini", base_url=openai_server.url)
    openai_server.reply = lambda body: '{"name": "x"}'
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}

    @rl.function
    def extract(s):
        s += rl.user("Give JSON")
        s += rl.assistant(rl.gen("json", json_schema=schema))

    assert json.loads(extract.run(backend=backend)["json"]) == {"name": "x"}
    body = openai_server.requests[0][1]
    assert body["response_format"]["json_schema"]["schema"] == schema


def test_chat_model_refusals(openai_server):
    backend = rl.OpenAI("gpt-4o-mini", base_url=openai_server.url)

    @rl.function
    def mid_text(s):
        s += rl.user("q")
        with s.assistant():
            s += "The answer is" + rl.gen("a")

    @rl.function
    def regex(s):
        s += rl.user("q") + rl.assistant(rl.gen("a", regex="[0-9]+"))

    @rl.function
    def integer(s):
        s += rl.user("q") + rl.assistant(rl.gen_int("a"))

    @rl.function
    def choose(s):
        s += rl.user("q") + rl.assistant(rl.select("a", choices=["x", "y"]))

    for program, error, message in [
        (mid_text, ValueError, "assistant turn"),
        (regex, NotImplementedError, "no regex"),
        (integer, NotImplementedError, "no regex"),
        (choose, NotImplementedError, "chat model cannot"),
    ]:
        with pytest.raises(rl.ProgramError, match=message) as info:
            program.run(backend=backend).sync()
        assert isinstance(info.value.__cause__, error)
    assert openai_server.requests == []


def test_completion_model_generate_stream_and_select(openai_server):
    backend = rl.OpenAI("gpt-3.5-turbo-instruct", base_url=openai_server.url)
    assert not backend.is_chat_model and backend.get_chat_template().name == "default"
    openai_server.favored = [" blue"]

    @rl.function
    def colour(s):
        s += "The sky is"
        s += rl.select("colour", choices=[" green", " blue"])
        s += ". Why?" + rl.gen("why", max_tokens=16, stop="\n")

    state = colour.run(backend=backend)
    assert state["colour"] == " blue"
    assert state.text() == "The sky is blue. Why?Hello there"
    (select_path, select_body), (gen_path, gen_body) = openai_server.requests
    assert select_path == gen_path == "/v1/completions"
    assert select_body == {
        "model": "gpt-3.5-turbo-instruct",
        "prompt": ["The sky is green", "The sky is blue"],
        "max_tokens": 0,
        "echo": True,
        "logprobs": 1,
        "temperature": 0,
    }
    assert gen_body["prompt"] == "The sky is blue. Why?" and gen_body["stop"] == ["\n"]
    # Only tokens past the prompt count: " blue" is five one-character tokens.
    assert len(state.get_meta_info("colour")["input_token_logprobs"][1]) == 5

    streamed = colour.run(backend=backend, stream=True)
    assert "".join(streamed.text_iter("why")) == "Hello there"
    assert openai_server.requests[-1][1]["stream"] is True
