"""/v1/chat/completions through the official `openai` client, on the real server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(default_server) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=default_server.url + "/v1", api_key="unused", max_retries=0, timeout=300
    )


def chat(client: openai.OpenAI, messages=QUESTION, **kwargs):
    return client.chat.completions.create(
        model=MODEL, messages=messages, **{"temperature": 0, "max_tokens": 16, **kwargs}
    )


def test_greedy_chat_answers_with_shape_and_usage(client):
    res = chat(client)
    assert res.object == "chat.completion" and res.id.startswith("chatcmpl-")
    (choice,) = res.choices
    assert choice.message.role == "assistant" and "Paris" in choice.message.content
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    assert res.usage.prompt_tokens > 20 and 0 < res.usage.completion_tokens <= 16
    assert res.usage.total_tokens == res.usage.prompt_tokens + res.usage.completion_tokens
    # The system prompt and question are a cached prefix the second time.
    again = chat(client)
    assert again.choices[0].message.content == choice.message.content
    assert again.usage.prompt_tokens_details.cached_tokens >= res.usage.prompt_tokens - 2


def test_length_limit_and_max_completion_tokens(client):
    res = chat(client, max_tokens=None, max_completion_tokens=3)
    assert res.usage.completion_tokens == 3 and res.choices[0].finish_reason == "length"


def test_without_max_tokens_the_answer_runs_to_its_end(client):
    res = chat(client, max_tokens=None)
    assert res.choices[0].finish_reason == "stop" and "Paris" in res.choices[0].message.content


def test_n_gives_indexed_choices_and_seed_makes_them_reproducible(client):
    kwargs = {"n": 3, "temperature": 1.0, "seed": 7, "max_tokens": 10}
    first = chat(client, **kwargs)
    assert [c.index for c in first.choices] == [0, 1, 2]
    texts = [c.message.content for c in first.choices]
    assert len(set(texts)) > 1  # parallel samples differ
    assert [c.message.content for c in chat(client, **kwargs).choices] == texts


def test_seed_is_independent_of_batch_neighbours(client):
    kwargs = {"temperature": 1.0, "seed": 42, "max_tokens": 10}
    solo = chat(client, **kwargs).choices[0].message.content
    with ThreadPoolExecutor(6) as pool:
        noise = [
            pool.submit(chat, client, [{"role": "user", "content": f"Say {i}"}], temperature=1.0)
            for i in range(5)
        ]
        crowded = pool.submit(chat, client, **kwargs).result()
        [f.result() for f in noise]
    assert crowded.choices[0].message.content == solo


def test_logprobs_shape(client):
    res = chat(client, logprobs=True, max_tokens=6)
    entries = res.choices[0].logprobs.content
    assert res.choices[0].finish_reason == "length" and len(entries) == 6
    assert "".join(e.token for e in entries) == res.choices[0].message.content
    for e in entries:
        assert e.logprob <= 0 and e.top_logprobs == []
        assert bytes(e.bytes).decode("utf-8", "replace") == e.token
    top = chat(client, logprobs=True, top_logprobs=3, max_tokens=4).choices[0].logprobs.content
    for e in top:
        assert len(e.top_logprobs) == 3
        assert e.top_logprobs[0].token == e.token  # greedy picks the most likely token
        assert e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob >= e.top_logprobs[2].logprob


def test_stop_strings_are_excluded(client):
    full = chat(client).choices[0].message.content
    assert " is " in full
    res = chat(client, stop=[" is ", "never"])
    assert res.choices[0].message.content == full[: full.index(" is ")]
    assert res.choices[0].finish_reason == "stop"


def test_streaming_deltas_rebuild_the_answer(client):
    plain = chat(client).choices[0].message.content
    chunks = list(chat(client, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    body = [c for c in chunks if c.choices]
    assert body[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in body[1:])
    assert "".join(c.choices[0].delta.content or "" for c in body) == plain
    assert body[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in body[:-1])
    usage = [c for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0] is chunks[-1] and chunks[-1].choices == []


def test_streaming_n_interleaves_indices_each_starting_with_the_role(client):
    chunks = list(chat(client, stream=True, n=2, temperature=1.0, seed=3, max_tokens=6))
    texts: dict[int, str] = {0: "", 1: ""}
    seen_role: set[int] = set()
    finished: set[int] = set()
    for chunk in chunks:
        (choice,) = chunk.choices
        if choice.delta.role:
            seen_role.add(choice.index)
        assert choice.index in seen_role  # the role comes first for every choice
        texts[choice.index] += choice.delta.content or ""
        if choice.finish_reason:
            finished.add(choice.index)
    assert finished == {0, 1}
    same = chat(client, n=2, temperature=1.0, seed=3, max_tokens=6)
    assert [texts[0], texts[1]] == [c.message.content for c in same.choices]


def test_streaming_logprobs(client):
    chunks = list(chat(client, stream=True, logprobs=True, max_tokens=5))
    entries = [
        e
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for e in c.choices[0].logprobs.content
    ]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "".join(e.token for e in entries) == text


def test_all_roles_and_content_parts(client):
    messages = [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": [{"type": "text", "text": "Capital of Italy?"}]},
        {"role": "assistant", "content": "Rome"},
        {"role": "developer", "content": "Stay brief."},
        {"role": "user", "content": "And of France?"},
    ]
    res = chat(client, messages)
    assert res.choices[0].message.content


def test_penalties_bias_and_extras_are_accepted(client):
    res = chat(
        client,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        logit_bias={"28": -100},
        top_p=0.9,
        user="tester",
        max_tokens=6,
        extra_body={
            "top_k": 20,
            "min_p": 0.01,
            "repetition_penalty": 1.1,
            "min_tokens": 6,
            "ignore_eos": True,
        },
    )
    assert res.usage.completion_tokens == 6 and "," not in res.choices[0].message.content
