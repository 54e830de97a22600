"""Parsing and validation of the native /generate body (pure)."""

from __future__ import annotations

import pytest

from radixlm.runtime.errors import InvalidRequestError
from radixlm.runtime.generate_request import parse_generate
from radixlm.runtime.sampling_params import SamplingParams

SGLANG_CLIENT_PARAMS = {
    "skip_special_tokens": True,
    "spaces_between_special_tokens": True,
    "max_new_tokens": 16,
    "min_new_tokens": 0,
    "n": 1,
    "stop": [],
    "stop_token_ids": [],
    "stop_regex": [],
    "temperature": 0,
    "top_p": 1.0,
    "top_k": -1,
    "min_p": 0.0,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "ignore_eos": False,
    "regex": None,
    "json_schema": None,
}


def test_sglang_client_body_is_accepted():
    params = {k: v for k, v in SGLANG_CLIENT_PARAMS.items() if k != "stop_regex"}
    parsed = parse_generate({"text": "hi", "sampling_params": params})
    (req,) = parsed.requests
    assert req.text == "hi" and not parsed.is_batch
    assert req.sampling.max_new_tokens == 16 and req.sampling.is_greedy


def test_batch_and_n_expand_in_order():
    parsed = parse_generate({"text": ["a", "b"], "sampling_params": {"n": 2, "sampling_seed": 5}})
    assert parsed.is_batch
    assert [r.text for r in parsed.requests] == ["a", "a", "b", "b"]
    assert [r.sampling.sampling_seed for r in parsed.requests] == [5, 6, 5, 6]
    assert len({r.rid for r in parsed.requests}) == 4


def test_input_ids_batch():
    parsed = parse_generate({"input_ids": [[1, 2], [3]]})
    assert [r.input_ids for r in parsed.requests] == [[1, 2], [3]]


def test_logprob_defaults_follow_sglang():
    prefill = parse_generate(
        {"text": "x", "return_logprob": True, "sampling_params": {"max_new_tokens": 0}}
    ).requests[0]
    assert prefill.logprob_start_len == 0
    decode = parse_generate({"text": "x", "return_logprob": True}).requests[0]
    assert decode.logprob_start_len == -1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": ""}, "text"),
        ({}, "text"),
        ([1, 2], "body"),
        ({"text": "a", "input_ids": [1]}, "text"),
        ({"input_ids": []}, "input_ids"),
        ({"input_ids": [1, -2]}, "input_ids"),
        (
            {"text": "a", "sampling_params": {"max_new_tokens": -1}},
            "sampling_params.max_new_tokens",
        ),
        (
            {"text": "a", "sampling_params": {"max_new_tokens": 1.5}},
            "sampling_params.max_new_tokens",
        ),
        ({"text": "a", "sampling_params": {"temperature": -0.1}}, "sampling_params.temperature"),
        ({"text": "a", "sampling_params": {"top_p": 0}}, "sampling_params.top_p"),
        ({"text": "a", "sampling_params": {"top_p": 1.5}}, "sampling_params.top_p"),
        ({"text": "a", "sampling_params": {"top_k": 0}}, "sampling_params.top_k"),
        # Integers past 64 bits once reached msgpack and torch (a 500, or a crashed batch).
        ({"text": "a", "sampling_params": {"top_k": 1e308}}, "sampling_params.top_k"),
        ({"text": "a", "sampling_params": {"top_k": 2**64}}, "sampling_params.top_k"),
        (
            {"text": "a", "sampling_params": {"stop_token_ids": [2**64]}},
            "sampling_params.stop_token_ids",
        ),
        (
            {"text": "a", "sampling_params": {"sampling_seed": 2**64}},
            "sampling_params.sampling_seed",
        ),
        ({"text": "a", "return_logprob": True, "logprob_start_len": 2**64}, "logprob_start_len"),
        (
            {"text": "a", "sampling_params": {"logit_bias": {str(2**64): 1}}},
            "sampling_params.logit_bias",
        ),
        ({"text": "a", "sampling_params": {"stop": 3}}, "sampling_params.stop"),
        ({"text": "a", "sampling_params": "hot"}, "sampling_params"),
        ({"text": "a", "stream": "yes"}, "stream"),
        ({"text": ["a", "b"], "sampling_params": [{}]}, "sampling_params"),
    ],
)
def test_bad_input_names_the_field(body, field):
    with pytest.raises(InvalidRequestError) as info:
        parse_generate(body)
    assert info.value.field == field
    assert info.value.status_code == 400


def test_json_schema_object_is_serialised():
    params = SamplingParams.from_request({"json_schema": {"type": "object"}})
    assert params.json_schema == '{"type":"object"}'
