"""select: a prefill request, then one batch scoring every choice; the scoring methods."""

from __future__ import annotations

import pytest

import radixlm as rl

PROMPT = "Is the sky blue? Answer:"


@rl.function
def ask(s, method=rl.token_length_normalized):
    s += PROMPT
    s += rl.select("answer", choices=[" yes", " no", " maybe"], choices_method=method)


def test_select_wire_protocol_and_decision(fake, endpoint):
    fake.favored = [" no"]
    state = ask.run(backend=endpoint)
    assert state["answer"] == " no"
    assert state.text() == PROMPT + " no"
    prefill, scoring = fake.generate_bodies()
    assert prefill == {"text": PROMPT, "sampling_params": {"max_new_tokens": 0}}
    assert scoring == {
        "text": [PROMPT + " yes", PROMPT + " no", PROMPT + " maybe"],
        "sampling_params": {"max_new_tokens": 0, "temperature": 0},
        "return_logprob": True,
        "return_text_in_logprobs": True,
        # The fake counts one token per character: P = len(PROMPT).
        "logprob_start_len": len(PROMPT) - 2,
    }
    meta = state.get_meta_info("answer")
    assert len(meta["normalized_prompt_logprobs"]) == 3
    best = max(range(3), key=meta["normalized_prompt_logprobs"].__getitem__)
    assert best == 1
    # Entries cover the last two prompt tokens and the choice; the first logprob is null.
    assert [e[2] for e in meta["input_token_logprobs"][1]] == list("r: no")
    assert meta["input_token_logprobs"][1][0][0] is None


def test_gen_with_choices_is_a_select(fake, endpoint):
    fake.favored = ["B"]

    @rl.function
    def pick(s):
        s += "Pick one:" + rl.gen("letter", choices=["A", "B"])

    assert pick.run(backend=endpoint)["letter"] == "B"
    assert len(fake.generate_bodies()) == 2


def test_greedy_token_selection(fake, endpoint):
    fake.favored = [" maybe"]
    state = ask.run(rl.greedy_token_selection, backend=endpoint)
    assert state["answer"] == " maybe"
    assert "greedy_logprob_matrix" in state.get_meta_info("answer")


def test_unconditional_likelihood_sends_token_ids(fake, endpoint):
    fake.favored = [" yes"]
    state = ask.run(rl.unconditional_likelihood_normalized, backend=endpoint)
    assert state["answer"] == " yes"
    bodies = fake.generate_bodies()
    assert len(bodies) == 3
    unconditional = bodies[2]
    assert unconditional["sampling_params"] == {"max_new_tokens": 0}
    assert unconditional["return_logprob"] is True and unconditional["logprob_start_len"] == 0
    assert unconditional["input_ids"][0] == [ord(c) for c in "r: yes"]


def test_select_rejects_sampling(fake, endpoint):
    @rl.function
    def hot(s):
        s += "x" + rl.select("v", choices=["a", "b"], temperature=0.7)

    state = hot.run(backend=endpoint)
    with pytest.raises(rl.ProgramError, match="temperature 0"):
        state["v"]


def test_select_needs_choices():
    with pytest.raises(ValueError, match="non-empty"):
        rl.select("v", choices=[])
