"""The OpenAI layer's pure parts: field validation, tools, tool-call parsing (whole and streamed),
response_format, chat prompt rendering and logprob shapes, against the real SmolLM2 tokenizer."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from radixlm.runtime.errors import InvalidRequestError
from radixlm.runtime.model_loader.resolve import default_tokenizer_dir
from radixlm.runtime.openai_api.chat import parse_chat
from radixlm.runtime.openai_api.chat_prompt import read_messages, render_prompt
from radixlm.runtime.openai_api.completions import parse_completion
from radixlm.runtime.openai_api.fields import Fields, sampling_values, to_sampling_params
from radixlm.runtime.openai_api.logprobs import TokenTexts, chat_logprobs, completion_logprobs
from radixlm.runtime.openai_api.response_format import json_schema_of
from radixlm.runtime.openai_api.strict_schema import strict_schema
from radixlm.runtime.openai_api.tools import ToolCallStream, parse_tool_calls, read_tools
from radixlm.runtime.tokenizer import Tokenizer

VOCAB = 49152
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
NAMES = frozenset({"get_weather", "get_time"})


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(default_tokenizer_dir())


def chat_body(**extra) -> dict:
    return {"messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"temperature": -1}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 0}, "top_k"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"frequency_penalty": -2.5}, "frequency_penalty"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"max_completion_tokens": -1}, "max_completion_tokens"),
        ({"n": 0}, "n"),
        ({"n": 100000}, "n"),
        ({"top_logprobs": 5}, "top_logprobs"),  # needs logprobs: true
        ({"logprobs": True, "top_logprobs": 1000}, "top_logprobs"),
        ({"seed": "x"}, "seed"),
        ({"stop": 5}, "stop"),
        ({"stop": ["x"] * 100000}, "stop"),
        ({"logit_bias": {"999999": 1}}, "logit_bias"),
        ({"logit_bias": {"5": 500}}, "logit_bias"),
        ({"stream": "yes"}, "stream"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools[0].function.name"),
        ({"min_tokens": 50, "max_tokens": 10}, "min_tokens"),
    ],
)
def test_chat_validation_names_the_field(extra, field):
    with pytest.raises(InvalidRequestError) as caught:
        call = parse_chat(chat_body(**extra), VOCAB)
        to_sampling_params({**call.sampling, "max_new_tokens": call.max_tokens or 100})
    assert caught.value.field == field
    assert field.split(".")[0].split("[")[0] in caught.value.message
    assert "sampling_params" not in caught.value.message


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([], "messages"),
        ("hello", "messages"),
        ([{"role": "wizard", "content": "x"}], "messages[0].role"),
        ([{"content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": 5}], "messages[0].content"),
        ([{"role": "user", "content": None}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "messages[0].content[0]"),
        ([{"role": "user", "content": "a"}, 7], "messages[1]"),
    ],
)
def test_bad_messages_are_rejected_with_their_path(messages, field):
    with pytest.raises(InvalidRequestError) as caught:
        read_messages(messages)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("prompt", "field"),
    [
        ("", "prompt"),
        ([], "prompt"),
        (None, "prompt"),
        (["ok", ""], "prompt[1]"),
        ([1, 2, VOCAB], "prompt"),
        ([[1, 2], [-1]], "prompt[1]"),
        ([[1, 2], 3.5], "prompt[1]"),
    ],
)
def test_bad_completion_prompts(prompt, field):
    with pytest.raises(InvalidRequestError) as caught:
        parse_completion({"prompt": prompt}, VOCAB)
    assert caught.value.field == field


def test_completion_prompt_forms_and_defaults():
    assert parse_completion({"prompt": "a"}, VOCAB).prompts == ["a"]
    assert parse_completion({"prompt": ["a", "b"]}, VOCAB).prompts == ["a", "b"]
    assert parse_completion({"prompt": [1, 2]}, VOCAB).prompts == [[1, 2]]
    call = parse_completion({"prompt": [[1], [2, 3]], "seed": 7, "min_tokens": 2}, VOCAB)
    assert call.prompts == [[1], [2, 3]] and call.max_tokens == 16
    assert call.sampling["sampling_seed"] == 7 and call.sampling["min_new_tokens"] == 2
    # max_tokens 0 scores the prompt only, which needs echo.
    assert parse_completion({"prompt": "a", "max_tokens": 0, "echo": True}, VOCAB).max_tokens == 0
    with pytest.raises(InvalidRequestError):
        parse_completion({"prompt": "a", "max_tokens": 0}, VOCAB)


def test_sampling_fields_map_to_sglang_names():
    values = sampling_values(
        Fields({"temperature": 0.5, "top_k": 5, "seed": 3, "stop": "x", "ignore_eos": True})
    )
    params = to_sampling_params({**values, "max_new_tokens": 4})
    assert params.temperature == 0.5 and params.top_k == 5 and params.sampling_seed == 3
    assert params.stop == ("x",) and params.ignore_eos and params.max_new_tokens == 4


def test_non_object_bodies_are_400():
    for body in ("abc", [1, 2], 42, None):
        with pytest.raises(InvalidRequestError) as caught:
            parse_chat(body, VOCAB)
        assert caught.value.field == "body"


def test_response_format_mapping():
    assert json_schema_of(None) is None and json_schema_of({"type": "text"}) is None
    assert json.loads(json_schema_of({"type": "json_object"})) == {"type": "object"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    spec = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert json.loads(json_schema_of(spec)) == {**schema, "additionalProperties": False}


def test_strict_schema_closes_listed_objects_only():
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "string"}}},
            "open": {"type": "object"},
            "extra": {"type": "object", "properties": {}, "additionalProperties": True},
            "list": {"type": "array", "items": {"properties": {"c": {}}}},
            "either": {"anyOf": [{"properties": {"d": {}}}, {"type": "null"}]},
        },
        "allOf": [{"properties": {"e": {}}}, {"properties": {"f": {}}}],
        "$defs": {"g": {"properties": {"h": {}}}},
    }
    out = strict_schema(schema)
    assert out["additionalProperties"] is False
    props = out["properties"]
    assert props["a"]["additionalProperties"] is False
    assert "additionalProperties" not in props["open"]  # "any object" stays any object
    assert props["extra"]["additionalProperties"] is True  # what the client said wins
    assert props["list"]["items"]["additionalProperties"] is False
    assert props["either"]["anyOf"][0]["additionalProperties"] is False
    assert all("additionalProperties" not in s for s in out["allOf"])  # they combine
    assert out["$defs"]["g"]["additionalProperties"] is False
    assert "additionalProperties" not in schema  # the input is not modified


def test_forced_tool_choice_becomes_a_schema_and_conflicts_are_rejected():
    call = parse_chat(chat_body(tools=[WEATHER], tool_choice="required"), VOCAB)
    schema = json.loads(call.sampling["json_schema"])
    assert schema["properties"]["name"] == {"const": "get_weather"}
    assert schema["properties"]["arguments"] == strict_schema(WEATHER["function"]["parameters"])
    assert schema["additionalProperties"] is False
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert parse_chat(chat_body(tools=[WEATHER], tool_choice=named), VOCAB).tools.forced_name
    with pytest.raises(InvalidRequestError) as caught:
        parse_chat(chat_body(tools=[WEATHER], tool_choice="required", regex="a+"), VOCAB)
    assert caught.value.field == "tool_choice"
    with pytest.raises(InvalidRequestError) as caught:
        parse_chat(chat_body(tools=[WEATHER], tool_choice={"function": {"name": "nope"}}), VOCAB)
    assert caught.value.field == "tool_choice"
    auto = parse_chat(chat_body(tools=[WEATHER]), VOCAB)
    assert auto.tools.choice == "auto" and "json_schema" not in auto.sampling
    assert not parse_chat(chat_body(tools=[WEATHER], tool_choice="none"), VOCAB).tools.enabled


def test_two_tools_required_is_any_of():
    other = {"type": "function", "function": {"name": "get_time"}}
    spec = read_tools([WEATHER, other], "required")
    schema = json.loads(spec.constraint_schema())
    assert [s["properties"]["name"]["const"] for s in schema["anyOf"]] == [
        "get_weather",
        "get_time",
    ]


@pytest.mark.parametrize(
    ("text", "content", "calls"),
    [
        (
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
            None,
            [("get_weather", {"city": "Paris"})],
        ),
        (
            'Let me check. <tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}'
            '</tool_call><tool_call>{"name": "get_time", "arguments": {}}',  # last tag unclosed
            "Let me check. ",
            [("get_weather", {"city": "Oslo"}), ("get_time", {})],
        ),
        (
            '{"name": "get_weather", "parameters": {"city": "Rome"}}',
            None,
            [("get_weather", {"city": "Rome"})],
        ),
        ('[{"name": "get_time", "arguments": "{}"}]', None, [("get_time", {})]),
        (
            '{"name": "launch_rocket", "arguments": {}}',
            '{"name": "launch_rocket", "arguments": {}}',
            [],
        ),
        (
            '<tool_call>{"name": "get_weather", "arguments": {"ci',
            '<tool_call>{"name": "get_weather", "arguments": {"ci',
            [],
        ),
        ("Paris is sunny.", "Paris is sunny.", []),
    ],
)
def test_parse_tool_calls(text, content, calls):
    got_content, got_calls = parse_tool_calls(text, NAMES)
    assert got_content == content
    assert [(c.name, json.loads(c.arguments)) for c in got_calls] == calls
    assert all(c.id.startswith("call_") for c in got_calls)
    assert len({c.id for c in got_calls}) == len(got_calls)


def stream_through(text: str, pieces: int) -> tuple[str, list]:
    """Feeds growing prefixes of ``text`` like a streaming request would."""
    parser = ToolCallStream(NAMES)
    content, calls = "", []
    cuts = sorted({len(text) * i // pieces for i in range(1, pieces)})
    for cut in cuts:
        delta, got = parser.feed(text[:cut], final=False)
        assert not got
        content += delta
    delta, calls = parser.feed(text, final=True)
    return content + delta, calls


@given(
    before=st.text(alphabet="ab <>tol_c", max_size=12),
    city=st.text(alphabet="xyz", min_size=1, max_size=5),
    pieces=st.integers(1, 40),
)
def test_streamed_tool_calls_match_whole_parse(before, city, pieces):
    call = json.dumps({"name": "get_weather", "arguments": {"city": city}})
    for text in (before, f"{before}<tool_call>{call}</tool_call>", call):
        whole_content, whole_calls = parse_tool_calls(text, NAMES)
        streamed, calls = stream_through(text, pieces)
        assert [(c.name, c.arguments) for c in calls] == [
            (c.name, c.arguments) for c in whole_calls
        ]
        if whole_calls:
            assert streamed == (whole_content or "")
            assert "<tool_call>" not in streamed
        else:
            assert streamed == text  # nothing lost, nothing repeated


def test_chat_template_gets_tools_and_folds_earlier_calls(tokenizer):
    messages = read_messages(
        [
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather "},
                    {"type": "text", "text": "in Oslo?"},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]
    )
    prompt = render_prompt(tokenizer, messages, [WEATHER])
    assert prompt.startswith("<|im_start|>system\nBe brief.\n\n# Tools")
    assert '"name": "get_weather"' in prompt and "<tools>" in prompt
    assert "<|im_start|>user\nWeather in Oslo?<|im_end|>" in prompt
    assert (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
        in prompt
    )
    assert "<|im_start|>tool\nsunny<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    plain = render_prompt(tokenizer, read_messages([{"role": "user", "content": "hi"}]), None)
    assert "# Tools" not in plain and "SmolLM" in plain  # the template's default system prompt


def test_logprob_shapes_and_token_bytes(tokenizer):
    texts = TokenTexts(tokenizer)
    ids = tokenizer.encode(" café ü")
    pairs = [(-0.5, t) for t in ids]
    chat = chat_logprobs(texts, pairs, [[(-0.5, t), (-float("inf"), 0)] for t in ids])
    assert b"".join(bytes(e["bytes"]) for e in chat["content"]) == " café ü".encode()
    assert all(e["logprob"] == -0.5 for e in chat["content"])
    assert chat["content"][0]["top_logprobs"][1]["logprob"] == -9999.0  # JSON has no -inf
    legacy = completion_logprobs(texts, [(None, ids[0]), *pairs[1:]], None, 3)
    assert legacy["token_logprobs"][0] is None and legacy["top_logprobs"] is None
    assert legacy["text_offset"][0] == 3
    assert all(
        legacy["text_offset"][i + 1] == legacy["text_offset"][i] + len(legacy["tokens"][i])
        for i in range(len(ids) - 1)
    )
    special = tokenizer.eos_token_id
    assert bytes(texts.bytes(special)).decode() == tokenizer.eos_token
