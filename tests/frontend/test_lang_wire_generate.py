"""gen and its sampling parameters: the exact /generate bodies and what lands in the state."""

from __future__ import annotations

import json
import warnings

import pytest

import radixlm as rl
from radixlm.backend.native_body import REGEX_BOOL, REGEX_FLOAT, REGEX_INT, REGEX_STR


def default_sampling(**changes):
    """SGLang's 17 keys with `run()`'s defaults, for the chatml template (SmolLM2's)."""
    params = {
        "skip_special_tokens": True,
        "spaces_between_special_tokens": True,
        "max_new_tokens": 128,
        "min_new_tokens": 0,
        "n": 1,
        "stop": ["<|im_end|>"],
        "stop_token_ids": [],
        "stop_regex": [],
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": -1,
        "min_p": 0.0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        "ignore_eos": False,
        "regex": None,
        "json_schema": None,
    }
    return params | changes


@rl.function
def one_gen(s, question):
    s += "Q: " + question + "\nA:"
    s += rl.gen("answer", max_tokens=16, stop="\n")


def test_gen_sends_all_seventeen_keys_and_stores_the_variable(fake, endpoint):
    fake.complete = lambda text, params: " Paris\nmore"
    state = one_gen.run(question="Capital of France?", backend=endpoint)
    assert state["answer"] == " Paris"
    assert state.text() == "Q: Capital of France?\nA: Paris"
    [body] = fake.generate_bodies()
    assert body == {
        "text": "Q: Capital of France?\nA:",
        # gen's stop replaces run's; the template's stop string is appended to every gen.
        "sampling_params": default_sampling(max_new_tokens=16, stop=["\n", "<|im_end|>"]),
    }
    meta = state.get_meta_info("answer")
    assert meta["finish_reason"] == {"type": "stop", "matched": "\n"}
    assert meta["prompt_tokens"] == len(body["text"])


def test_run_defaults_reach_every_gen_and_gen_overrides_win(fake, endpoint):
    @rl.function
    def two(s):
        s += "a" + rl.gen("x")
        s += "b" + rl.gen("y", temperature=0.5, top_k=5, stop=["!"], stop_token_ids=[7])

    two.run(
        backend=endpoint,
        max_new_tokens=8,
        temperature=0.0,
        top_p=0.9,
        min_p=0.1,
        frequency_penalty=0.2,
        presence_penalty=0.3,
        ignore_eos=True,
        stop=["STOP"],
        n=1,
    ).sync()
    first, second = fake.generate_bodies()
    run_values = dict(
        max_new_tokens=8,
        temperature=0.0,
        top_p=0.9,
        min_p=0.1,
        frequency_penalty=0.2,
        presence_penalty=0.3,
        ignore_eos=True,
    )
    assert first["sampling_params"] == default_sampling(**run_values, stop=["STOP", "<|im_end|>"])
    assert second["sampling_params"] == default_sampling(
        **run_values | {"temperature": 0.5},
        top_k=5,
        stop=["!", "<|im_end|>"],
        stop_token_ids=[7],
    )
    assert first["text"] == "a" and second["text"] == "aokb"


def test_lone_stop_string_stays_a_string_without_template_stops(fake):
    endpoint = rl.RuntimeEndpoint(fake.url, chat_template_name="default")
    fake.clear()
    one_gen.run(question="q", backend=endpoint).sync()
    [body] = fake.generate_bodies()
    assert body["sampling_params"]["stop"] == "\n"


@pytest.mark.parametrize(
    ("make_gen", "regex", "extra_stops"),
    [
        (lambda: rl.gen_int("v"), REGEX_INT, [" ", "\n"]),
        (lambda: rl.gen("v", dtype=float), REGEX_FLOAT, [" ", "\n"]),
        (lambda: rl.gen_string("v"), REGEX_STR, []),
        (lambda: rl.gen("v", dtype="bool"), REGEX_BOOL, []),
    ],
)
def test_dtype_becomes_a_client_side_regex(fake, endpoint, make_gen, regex, extra_stops):
    @rl.function
    def typed(s):
        s += "value: " + make_gen()

    typed.run(backend=endpoint).sync()
    [body] = fake.generate_bodies()
    assert body["sampling_params"]["regex"] == regex
    assert body["sampling_params"]["stop"] == ["<|im_end|>", *extra_stops]


def test_dtype_wins_over_regex_with_a_warning(fake, endpoint):
    @rl.function
    def both(s):
        s += rl.gen("v", dtype=int, regex="[a-z]+")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        both.run(backend=endpoint).sync()
    assert any("dtype" in str(w.message) for w in caught)
    assert fake.generate_bodies()[0]["sampling_params"]["regex"] == REGEX_INT


def test_regex_and_json_schema_pass_through(fake, endpoint):
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}

    @rl.function
    def constrained(s):
        s += rl.gen("ip", regex=r"\d+\.\d+")
        s += rl.gen("obj", json_schema=schema)
        s += rl.gen("raw", json_schema='{"type": "integer"}')

    constrained.run(backend=endpoint).sync()
    ip, obj, raw = (b["sampling_params"] for b in fake.generate_bodies())
    assert ip["regex"] == r"\d+\.\d+" and ip["json_schema"] is None
    assert json.loads(obj["json_schema"]) == schema and obj["regex"] is None
    assert raw["json_schema"] == '{"type": "integer"}'


def test_invalid_constraints_fail_where_the_program_writes_them():
    with pytest.raises(Exception, match="unterminated|missing"):
        rl.gen("x", regex="[a-")
    with pytest.raises(ValueError, match="one of regex and json_schema"):
        rl.gen("x", regex="a", json_schema="{}")
    with pytest.raises(ValueError, match="dtype"):
        rl.gen("x", dtype=list)
    with pytest.raises(TypeError, match="regex"):
        rl.gen_int("x", regex="a")


def test_logprob_keys_are_top_level_and_only_when_set(fake, endpoint):
    @rl.function
    def lp(s):
        s += "x" + rl.gen("plain", max_tokens=2)
        s += rl.gen(
            "scored",
            max_tokens=2,
            return_logprob=True,
            logprob_start_len=0,
            top_logprobs_num=2,
            return_text_in_logprobs=True,
        )

    state = lp.run(backend=endpoint)
    state.sync()
    plain, scored = fake.generate_bodies()
    assert set(plain) == {"text", "sampling_params"}
    assert {k: scored[k] for k in set(scored) - {"text", "sampling_params"}} == {
        "return_logprob": True,
        "logprob_start_len": 0,
        "top_logprobs_num": 2,
        "return_text_in_logprobs": True,
    }
    assert state.get_meta_info("scored")["input_token_logprobs"][0][0] is None


def test_run_level_logprob_arguments_apply_to_every_gen(fake, endpoint):
    one_gen.run(question="q", backend=endpoint, return_logprob=True, logprob_start_len=3).sync()
    [body] = fake.generate_bodies()
    assert body["return_logprob"] is True and body["logprob_start_len"] == 3


def test_skip_special_tokens_follows_global_config(fake, endpoint):
    rl.global_config.skip_special_tokens_in_output = False
    try:
        one_gen.run(question="q", backend=endpoint).sync()
    finally:
        rl.global_config.skip_special_tokens_in_output = True
    assert fake.generate_bodies()[0]["sampling_params"]["skip_special_tokens"] is False


def test_state_variable_methods(fake, endpoint):
    fake.complete = lambda text, params: "42"

    @rl.function
    def prog(s):
        s += "n=" + rl.gen("n", max_tokens=4)
        s["extra"] = "set by program"
        s += " again " + s["n"]

    state = prog.run(backend=endpoint)
    assert state.text() == "n=42 again 42"
    assert "n" in state and "extra" in state and "missing" not in state
    assert state["extra"] == "set by program"
    state["later"] = 5
    assert state.get_var("later") == 5
    with pytest.raises(KeyError, match="missing"):
        state["missing"]
    assert repr(state) == "ProgramState('n=42 again 42')"


def test_default_backend_and_positional_arguments(fake, endpoint):
    rl.set_default_backend(endpoint)
    state = one_gen("Who?")
    assert state.text().startswith("Q: Who?\nA:")
    with pytest.raises(ValueError, match="no backend"):
        rl.global_config.default_backend = None
        one_gen.run(question="q")


def test_program_return_value_and_first_parameter_rule(fake, endpoint):
    @rl.function
    def returns(s, x):
        s += x
        return x * 2

    assert returns.run("ab", backend=endpoint).ret_value == "abab"
    with pytest.raises(ValueError, match='named "s"'):
        rl.function(lambda state: None)


def test_flush_cache_and_server_info(fake, endpoint):
    rl.flush_cache(endpoint)
    assert rl.get_server_info(endpoint)["fake"] is True
    assert fake.requests == [
        ("POST", "/flush_cache", None),
        ("GET", "/get_server_info", None),
    ]


def test_endpoint_reads_model_info_and_sends_api_key(fake):
    backend = rl.RuntimeEndpoint(fake.url + "/", api_key="sekret")
    assert backend.get_model_name() == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert backend.get_chat_template().name == "chatml"
    assert fake.requests[0] == ("GET", "/get_model_info", None)
    backend.flush_cache()
    assert fake.authorizations == ["Bearer sekret", "Bearer sekret"]


def test_token_usage_sums_meta_info(fake, endpoint):
    fake.complete = lambda text, params: "abc"
    one_gen.run(question="q", backend=endpoint).sync()
    usage = endpoint.token_usage.snapshot()
    assert (usage.num_requests, usage.prompt_tokens, usage.completion_tokens) == (1, 7, 3)
    endpoint.token_usage.reset()
    assert endpoint.token_usage.snapshot().num_requests == 0
