"""run_batch: traced prefix pre-caching, ordering, argument forms, bind and cache."""

from __future__ import annotations

import radixlm as rl

FEW_SHOT = (
    "The following are questions with answers.\n"
    "Q: What is the capital of France?\nA: Paris\n"
    "Q: What is the capital of Japan?\nA: Tokyo\n"
)


@rl.function
def few_shot_qa(s, question):
    s += FEW_SHOT
    s += "Q: " + question + "\nA:"
    s += rl.gen("answer", max_tokens=16, stop="\n")


def echo_question(text: str, params: dict) -> str:
    return " " + text.rsplit("Q: ", 1)[1].split("?")[0].upper() + "\n"


def test_run_batch_precaches_the_traced_prefix_and_keeps_order(fake, endpoint):
    fake.complete = echo_question
    questions = [f"item {i}?" for i in range(10)]
    states = few_shot_qa.run_batch(
        [{"question": q} for q in questions], backend=endpoint, temperature=0, num_threads=4
    )
    assert [s["answer"] for s in states] == [f" ITEM {i}" for i in range(10)]
    bodies = fake.generate_bodies()
    assert bodies[0] == {"text": FEW_SHOT + "Q: ", "sampling_params": {"max_new_tokens": 0}}
    assert len(bodies) == 11
    assert all(b["sampling_params"]["temperature"] == 0 for b in bodies[1:])


def test_single_program_batch_skips_the_precache(fake, endpoint):
    states = few_shot_qa.run_batch([{"question": "one?"}], backend=endpoint)
    assert len(states) == 1
    assert len(fake.generate_bodies()) == 1
    assert few_shot_qa.run_batch([], backend=endpoint) == []


def test_short_prefixes_are_not_precached(fake, endpoint):
    @rl.function
    def short(s, x):
        s += "Q: " + x + rl.gen("a", max_tokens=2)

    short.run_batch([{"x": "a"}, {"x": "b"}], backend=endpoint)
    assert sorted(b["text"] for b in fake.generate_bodies()) == ["Q: a", "Q: b"]


def test_positional_tuples_progress_bar_and_default_backend(fake, endpoint, capsys):
    rl.set_default_backend(endpoint)
    states = few_shot_qa.run_batch([("a?",), ("b?",)], progress_bar=True, num_threads=1)
    assert [s["answer"] for s in states] == ["ok", "ok"]
    assert "2/2" in capsys.readouterr().err


def test_precache_can_be_disabled(fake, endpoint):
    rl.global_config.enable_precache_with_tracing = False
    try:
        few_shot_qa.run_batch([{"question": "a?"}, {"question": "b?"}], backend=endpoint)
    finally:
        rl.global_config.enable_precache_with_tracing = True
    assert all(b["sampling_params"]["max_new_tokens"] == 16 for b in fake.generate_bodies())


def test_bind_extends_the_shared_prefix_and_cache_sends_it(fake, endpoint):
    @rl.function
    def with_context(s, context, question):
        s += "Context: " + context + "\n"
        s += "Q: " + question + "\nA:" + rl.gen("a", max_tokens=4)

    context = "A long shared document. " * 4
    bound = with_context.bind(context=context)
    prefix = bound.cache(endpoint)
    assert prefix == "Context: " + context + "\nQ: "
    assert fake.generate_bodies() == [{"text": prefix, "sampling_params": {"max_new_tokens": 0}}]
    fake.clear()
    state = bound.run(question="why?", backend=endpoint)
    assert state.text() == prefix + "why?\nA:ok"
    # The unbound program's shared prefix stops at its first argument: too short to send.
    assert with_context.cache(endpoint) == "Context: "


def test_a_failing_program_does_not_sink_the_batch(fake, endpoint):
    fake.fail = lambda body: (500, {"error": "bad"}) if "boom" in str(body["text"]) else None
    states = few_shot_qa.run_batch(
        [{"question": "fine?"}, {"question": "boom?"}, {"question": "also fine?"}],
        backend=endpoint,
    )
    assert states[0]["answer"] == "ok" and states[2]["answer"] == "ok"
    assert isinstance(states[1].error(), rl.backend.http_client.BackendError)
    assert states[1].error().status_code == 500
