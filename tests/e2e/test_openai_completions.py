"""/v1/completions and /v1/models through the official `openai` client, on the real server."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from radixlm.runtime.model_loader.resolve import default_tokenizer_dir
from radixlm.runtime.tokenizer import Tokenizer

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
COUNT = "1, 2, 3,"


@pytest.fixture(scope="module")
def client(default_server) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=default_server.url + "/v1", api_key="unused", max_retries=0, timeout=300
    )


def complete(client: openai.OpenAI, **kwargs):
    return client.completions.create(model=MODEL, **{"temperature": 0, **kwargs})


def test_models_lists_the_served_model(client):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert models[0].owned_by == "radixlm" and models[0].max_model_len > 0
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-5")


def test_greedy_completion_shape_and_usage(client):
    res = complete(client, prompt=COUNT, max_tokens=6)
    assert res.object == "text_completion" and res.id.startswith("cmpl-")
    assert res.model == MODEL
    (choice,) = res.choices
    assert choice.index == 0 and choice.text.startswith(" 4, 5")
    assert choice.finish_reason == "length" and choice.logprobs is None
    usage = res.usage
    assert usage.completion_tokens == 6 and usage.prompt_tokens == 8
    assert usage.total_tokens == 14
    assert usage.prompt_tokens_details.cached_tokens >= 0


def test_default_max_tokens_is_16(client):
    res = complete(client, prompt=COUNT, extra_body={"ignore_eos": True})
    assert res.usage.completion_tokens == 16


def test_prompt_forms_and_n_give_choices_in_order(client):
    text_res = complete(client, prompt=[COUNT, "a, b, c,"], max_tokens=4, n=2)
    assert [c.index for c in text_res.choices] == [0, 1, 2, 3]
    texts = [c.text for c in text_res.choices]
    assert texts[0] == texts[1] and texts[2] == texts[3] and texts[0] != texts[2]
    singles = [complete(client, prompt=p, max_tokens=4) for p in (COUNT, "a, b, c,")]
    assert [s.choices[0].text for s in singles] == [texts[0], texts[2]]
    # Each prompt is billed once, not n times.
    assert text_res.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles)
    assert text_res.usage.completion_tokens == 16


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(default_tokenizer_dir())


def test_token_id_prompts_equal_text_prompts(client, tokenizer):
    ids = tokenizer.encode(COUNT)
    assert len(ids) == 8
    by_ids = complete(client, prompt=ids, max_tokens=5).choices[0].text
    by_id_lists = complete(client, prompt=[ids, ids], max_tokens=5).choices
    assert by_ids == complete(client, prompt=COUNT, max_tokens=5).choices[0].text
    assert [c.text for c in by_id_lists] == [by_ids, by_ids]


def test_echo_with_logprobs_covers_prompt_and_completion(client):
    res = complete(client, prompt=COUNT, max_tokens=4, echo=True, logprobs=2)
    choice = res.choices[0]
    assert choice.text.startswith(COUNT) and len(choice.text) > len(COUNT)
    lp = choice.logprobs
    n = len(lp.tokens)
    assert n == 8 + 4
    assert len(lp.token_logprobs) == len(lp.text_offset) == len(lp.top_logprobs) == n
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v <= 0 for v in lp.token_logprobs[1:])
    assert "".join(lp.tokens) == choice.text
    for i, token in enumerate(lp.tokens):
        assert choice.text[lp.text_offset[i] :].startswith(token)
    for token, logprob, top in zip(
        lp.tokens[8:], lp.token_logprobs[8:], lp.top_logprobs[8:], strict=True
    ):
        assert len(top) == 2 and top[token] == pytest.approx(logprob, abs=1e-4)  # greedy = top-1


def test_logprobs_without_echo(client):
    res = complete(client, prompt=COUNT, max_tokens=3, logprobs=0)
    lp = res.choices[0].logprobs
    assert len(lp.tokens) == 3 and lp.top_logprobs is None and lp.text_offset[0] == 0
    assert "".join(lp.tokens) == res.choices[0].text


def test_stop_strings_never_appear(client):
    base = complete(client, prompt=COUNT, max_tokens=12).choices[0].text
    assert " 6" in base
    for stop in (" 6", [" 6", "zzz"]):
        choice = complete(client, prompt=COUNT, max_tokens=12, stop=stop).choices[0]
        assert choice.text == base[: base.index(" 6")]
        assert choice.finish_reason == "stop"


def test_streaming_matches_non_streaming_with_one_usage_chunk(client):
    plain = complete(client, prompt=COUNT, max_tokens=8)
    chunks = list(
        complete(
            client, prompt=COUNT, max_tokens=8, stream=True, stream_options={"include_usage": True}
        )
    )
    text_chunks = [c for c in chunks if c.choices]
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 8
    assert "".join(c.choices[0].text for c in text_chunks) == plain.choices[0].text
    assert [c.choices[0].finish_reason for c in text_chunks][-1] == "length"
    assert all(c.choices[0].finish_reason is None for c in text_chunks[:-1])


def test_raw_stream_ends_with_done_and_has_no_usage_without_include_usage(default_server):
    body = {"model": MODEL, "prompt": COUNT, "max_tokens": 3, "stream": True, "temperature": 0}
    with requests.post(
        default_server.url + "/v1/completions", json=body, stream=True, timeout=120
    ) as res:
        lines = [line for line in res.iter_lines() if line]
    assert lines[-1] == b"data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert all("usage" not in e for e in events)


def test_seed_gives_the_same_text_regardless_of_batch_neighbours(client):
    def sampled(seed: int):
        return (
            complete(client, prompt="Once upon a time", max_tokens=12, temperature=1.0, seed=seed)
            .choices[0]
            .text
        )

    solo = sampled(1234)
    with ThreadPoolExecutor(6) as pool:
        neighbours = [
            pool.submit(complete, client, prompt=f"Story {i}:", max_tokens=12, temperature=1.0)
            for i in range(5)
        ]
        crowded = pool.submit(sampled, 1234).result()
        [f.result() for f in neighbours]
    assert crowded == solo
    assert sampled(99) != solo  # the seed matters


def test_sampling_extras_and_penalties_change_the_output(client):
    prompt = "The the the the the the"
    base = complete(client, prompt=prompt, max_tokens=8).choices[0].text
    for extra in (
        {"frequency_penalty": 2.0},
        {"presence_penalty": 2.0},
        {"extra_body": {"repetition_penalty": 2.0}},
    ):
        assert complete(client, prompt=prompt, max_tokens=8, **extra).choices[0].text != base
    res = complete(
        client,
        prompt=prompt,
        max_tokens=8,
        temperature=0.7,
        top_p=0.9,
        user="tester",
        extra_body={"top_k": 5, "min_p": 0.05, "min_tokens": 8, "ignore_eos": True},
    )
    assert res.usage.completion_tokens == 8


def test_logit_bias_forces_a_token(client, tokenizer):
    (zebra,) = tokenizer.encode(" zebra")
    res = complete(client, prompt=COUNT, max_tokens=2, logit_bias={str(zebra): 100})
    assert res.choices[0].text == " zebra zebra"


def test_repeated_prompt_reports_cached_tokens(client):
    prompt = " ".join(f"line {i}." for i in range(60))
    complete(client, prompt=prompt, max_tokens=1)
    again = complete(client, prompt=prompt, max_tokens=1)
    assert again.usage.prompt_tokens_details.cached_tokens >= again.usage.prompt_tokens - 2
