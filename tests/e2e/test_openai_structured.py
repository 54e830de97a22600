"""Structured outputs and tools through the `openai` client: response_format, the regex extra,
tool_choice auto / none / required / named, and streamed tool-call deltas."""

from __future__ import annotations

import json
import re

import jsonschema
import openai
import pytest

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}},
    "required": ["city"],
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": WEATHER_PARAMS,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current time",
            "parameters": {"type": "object", "properties": {}},
        },
    },
]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
# What a tool-calling model writes; forced here with the `regex` extra so that "auto" parsing is
# tested end to end with a model too small to call tools on its own.
CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.fixture(scope="module")
def client(default_server) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=default_server.url + "/v1", api_key="unused", max_retries=0, timeout=300
    )


def chat(client: openai.OpenAI, messages=ASK, **kwargs):
    return client.chat.completions.create(
        model=MODEL, messages=messages, **{"temperature": 0, "max_tokens": 48, **kwargs}
    )


def test_json_object_gives_a_json_object(client):
    res = chat(
        client,
        [{"role": "user", "content": "Describe Paris as JSON."}],
        response_format={"type": "json_object"},
        max_tokens=64,
    )
    choice = res.choices[0]
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content), dict)
    else:  # ran out of tokens: reported truthfully, never repaired
        assert choice.finish_reason == "length" and choice.message.content.lstrip().startswith("{")


def test_json_schema_output_validates(client):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "population": {"type": "integer"},
        },
        "required": ["name", "population"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}}
    res = chat(client, [{"role": "user", "content": "Describe Paris."}], response_format=fmt)
    assert res.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(res.choices[0].message.content), schema)


def test_regex_extra_on_both_routes(client):
    pattern = r"(yes|no), [0-9]{2}"
    text = chat(client, extra_body={"regex": pattern}).choices[0].message.content
    assert re.fullmatch(pattern, text)
    done = client.completions.create(
        model=MODEL, prompt="Answer:", max_tokens=10, temperature=0, extra_body={"regex": pattern}
    )
    assert re.fullmatch(pattern, done.choices[0].text)


@pytest.mark.parametrize(
    "tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_forced_tool_call(client, tool_choice):
    res = chat(client, tools=TOOLS, tool_choice=tool_choice)
    choice = res.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    if tool_choice != "required":
        assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    params = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    jsonschema.validate(arguments, params[call.function.name])


def test_auto_parses_a_tool_call_the_model_writes(client):
    res = chat(client, tools=TOOLS, extra_body={"regex": re.escape(CALL_TEXT)})
    choice = res.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_tool_choice_none_leaves_the_text_alone(client):
    res = chat(client, tools=TOOLS, tool_choice="none", extra_body={"regex": re.escape(CALL_TEXT)})
    assert res.choices[0].message.content == CALL_TEXT and res.choices[0].finish_reason == "stop"
    assert res.choices[0].message.tool_calls is None


def test_streamed_tool_call_deltas(client):
    chunks = list(chat(client, tools=TOOLS, tool_choice="required", stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    calls = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert calls and calls[0].index == 0 and calls[0].type == "function"
    assert calls[0].id.startswith("call_") and calls[0].function.name in {"get_weather", "get_time"}
    arguments = "".join(tc.function.arguments or "" for tc in calls)
    assert isinstance(json.loads(arguments), dict)
    assert not "".join(d.content or "" for d in deltas).strip()
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_results_go_back_into_the_conversation(client):
    messages = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 C"},
    ]
    res = chat(client, messages, tools=TOOLS, tool_choice="none", max_tokens=24)
    assert res.choices[0].message.content and res.choices[0].finish_reason in ("stop", "length")
    again = chat(client, messages, tools=TOOLS, max_tokens=48)  # auto: text or another call
    choice = again.choices[0]
    assert choice.message.content or choice.finish_reason == "tool_calls"


def test_invalid_schema_is_a_400_naming_response_format(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, response_format=fmt)
    assert caught.value.body["param"] == "response_format"


def test_response_format_and_the_regex_extra_are_exclusive(client):
    fmt = {"type": "json_object"}
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, response_format=fmt, extra_body={"regex": "a+"})
    assert caught.value.body["param"] == "response_format"
    assert "regex" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        # response_format on completions is SGLang's extension: an extra field here too
        client.completions.create(
            model=MODEL, prompt="x", extra_body={"response_format": fmt, "regex": "a+"}
        )
    assert caught.value.body["param"] == "response_format"
