"""The language against the real server and the default model (SmolLM2-135M-Instruct).

Only what a 135M model reliably does is checked: formats, choices, plumbing, ordering.
"""

from __future__ import annotations

import json
import re

import pytest

import radixlm as rl

# A hung server must fail the test, not stall the suite.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def backend(lang_server: rl.Runtime) -> rl.RuntimeEndpoint:
    return lang_server.endpoint


def test_model_info_picks_chatml(backend):
    assert backend.get_model_name() == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert backend.get_chat_template().name == "chatml"


def test_chat_gen_and_variable_plumbing(backend):
    @rl.function
    def expert(s, question):
        s += rl.user("Name one expert who could answer: " + question)
        s += rl.assistant(rl.gen("expert", max_tokens=8, stop="\n"))
        s += rl.user("As " + s["expert"] + ", answer in one sentence.")
        s += rl.assistant(rl.gen("answer", max_tokens=8))

    state = expert.run("Why is the sky blue?", temperature=0, backend=backend)
    assert state["expert"].strip() and state["answer"].strip()
    messages = state.messages()
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[2]["content"] == "As " + state["expert"] + ", answer in one sentence."
    assert state.text().count("<|im_start|>") == 4
    meta = state.get_meta_info("answer")
    assert 0 < meta["completion_tokens"] <= 8
    # The second turn's prompt extends the first's, so the radix cache serves part of it.
    assert meta["cached_tokens"] > 0


def test_constrained_formats(backend):
    @rl.function
    def formats(s):
        s += "Q: How many days are in a week?\nA: " + rl.gen_int("days", max_tokens=4) + "\n"
        s += "Q: Give an IPv4 address.\nA: "
        s += rl.gen(
            "ip",
            max_tokens=20,
            regex=r"((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)",
        )
        s += "\nQ: Is water wet?\nA: " + rl.gen("bool", dtype=bool, max_tokens=3)
        s += "\nQ: A name?\nA: " + rl.gen_string("name", max_tokens=12)

    state = formats.run(temperature=0, backend=backend)
    int(state["days"])
    assert re.fullmatch(r"(\d{1,3}\.){3}\d{1,3}", state["ip"])
    assert state["bool"] in ("True", "False")
    assert re.fullmatch(r"\"[\w\d\s]*\"", state["name"])


def test_json_schema_gen_parses(backend):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "year": {"type": "integer"}},
        "required": ["city", "year"],
        "additionalProperties": False,
    }

    @rl.function
    def extract(s):
        s += rl.user("Paris hosted the Olympics in 1924. Give the city and year as JSON.")
        s += rl.assistant(rl.gen("json", max_tokens=48, json_schema=schema))

    value = json.loads(extract.run(temperature=0, backend=backend)["json"])
    assert isinstance(value["city"], str) and isinstance(value["year"], int)


@pytest.mark.parametrize(
    "method",
    [rl.token_length_normalized, rl.greedy_token_selection, rl.unconditional_likelihood_normalized],
)
def test_select_returns_one_of_the_choices(backend, method):
    choices = ["Paris", "London", "a banana"]

    @rl.function
    def capital(s):
        s += "Q: What is the capital of France?\nA: "
        s += rl.select("answer", choices=choices, choices_method=method)

    state = capital.run(backend=backend)
    assert state["answer"] in choices
    assert state.text().endswith(state["answer"])
    meta = state.get_meta_info("answer")
    assert len(meta["normalized_prompt_logprobs"]) == 3
    assert all(lp < 0 for lp in meta["normalized_prompt_logprobs"])


def test_fork_join_gathers_lists_and_reuses_the_prefix(backend):
    @rl.function
    def tips(s):
        s += "Here are three short tips for staying healthy and happy every day.\n"
        forks = s.fork(3)
        for i, f in enumerate(forks):
            f += f"Tip {i + 1}:" + rl.gen("tip", max_tokens=10, stop="\n")
        forks.join()

    state = tips.run(temperature=0, backend=backend)
    assert isinstance(state["tip"], list) and len(state["tip"]) == 3
    assert all(isinstance(t, str) for t in state["tip"])


def test_streaming_deltas_concatenate_to_the_final_text(backend):
    @rl.function
    def story(s):
        s += rl.user("Write one sentence about the sea.")
        s += rl.assistant(rl.gen("story", max_tokens=12))

    state = story.run(temperature=0, stream=True, backend=backend)
    deltas = list(state.text_iter("story"))
    assert len(deltas) > 1
    assert "".join(deltas) == state["story"]
    state = story.run(temperature=0, stream=True, backend=backend)
    assert "".join(state.text_iter()) == state.text()


def test_run_batch_results_in_order_and_precache_hits(backend):
    @rl.function
    def count(s, n):
        s += "Count upward by one, one number per line, starting from the given number.\n"
        s += "Start: " + str(n) + "\nNext:" + rl.gen("next", max_tokens=4, stop="\n")

    starts = [3, 10, 41, 7, 99]
    rl.flush_cache(backend)
    backend.token_usage.reset()
    states = count.run_batch([{"n": n} for n in starts], temperature=0, backend=backend)
    assert len(states) == len(starts)
    for n, state in zip(starts, states, strict=True):
        assert state.text().startswith(
            "Count upward by one, one number per line, starting from the given number.\n"
            f"Start: {n}\n"
        )
        assert isinstance(state["next"], str)
    usage = backend.token_usage.snapshot()
    # The precache request plus one per program; the programs find the shared prefix cached.
    assert usage.num_requests == len(starts) + 1
    assert usage.cached_tokens > 0


def test_server_info_and_flush(backend):
    info = rl.get_server_info(backend)
    assert isinstance(info, dict) and info
    rl.flush_cache(backend)


def test_a_bad_request_fails_the_program_with_the_servers_message(backend):
    @rl.function
    def too_long(s):
        s += "x" + rl.gen("y", max_tokens=-5)

    with pytest.raises(rl.ProgramError, match="max_new_tokens"):
        too_long.run(backend=backend).sync()


def test_runtime_reports_a_server_that_cannot_start():
    with pytest.raises(RuntimeError, match="exited with code"):
        rl.Runtime(model_path="/nonexistent/model/path", launch_timeout_s=120)
