"""fork / join / copy / var_scope: the prefix commit, branch bodies, gathered variables."""

from __future__ import annotations

import time

import pytest

import radixlm as rl

TIP_PREFIX = "Here are two tips for staying healthy: 1. Balanced Diet. 2. Regular Exercise.\n\n"


@rl.function
def tips(s):
    s += TIP_PREFIX
    forks = s.fork(2)
    for i, f in enumerate(forks):
        f += f"Now, expand tip {i + 1} into a paragraph:\n"
        f += rl.gen("detailed_tip", max_tokens=16, stop="\n\n")
    forks.join()
    s += "Tip 1:" + forks[0]["detailed_tip"] + "\nTip 2:" + forks[1]["detailed_tip"] + "\n"
    s += "In summary" + rl.gen("summary", max_tokens=16)


def test_fork_commits_the_prefix_then_runs_branches_and_gathers(fake, endpoint):
    def complete(text: str, params: dict) -> str:
        if text.endswith("paragraph:\n"):
            return " eat well" if "tip 1" in text else " move more"
        return " be healthy"

    fake.complete = complete
    state = tips.run(backend=endpoint)
    assert state["detailed_tip"] == [" eat well", " move more"]
    assert state["summary"] == " be healthy"
    bodies = fake.generate_bodies()
    # The shared prefix is prefilled once, before any branch runs.
    assert bodies[0] == {"text": TIP_PREFIX, "sampling_params": {"max_new_tokens": 0}}
    assert sorted(b["text"] for b in bodies[1:3]) == [
        TIP_PREFIX + "Now, expand tip 1 into a paragraph:\n",
        TIP_PREFIX + "Now, expand tip 2 into a paragraph:\n",
    ]
    assert bodies[1]["sampling_params"]["stop"] == ["\n\n", "<|im_end|>"]
    assert bodies[3]["text"] == TIP_PREFIX + "Tip 1: eat well\nTip 2: move more\nIn summary"


def test_forks_run_in_parallel(fake, endpoint):
    fake.delay_s = 0.5

    @rl.function
    def wide(s):
        s += "x"
        forks = s.fork(4)
        forks += rl.gen("y", max_tokens=2)
        forks.join()

    t0 = time.perf_counter()
    state = wide.run(backend=endpoint)
    assert len(state["y"]) == 4
    # The prefix commit then four 0.5 s gens at once (~1 s), far below 2.5 s in a row.
    assert time.perf_counter() - t0 < 2.0


def test_group_append_forms_and_fork_indexing(fake, endpoint):
    @rl.function
    def forms(s):
        s += "base "
        forks = s.fork(3)
        forks += lambda i: f"[{i}]"
        forks += ["a", "b", "c"]
        forks += "!"
        forks += rl.gen("g", max_tokens=2)
        forks.join()
        return [f.text() for f in forks]

    state = forms.run(backend=endpoint)
    assert state.ret_value == ["base [0]a!ok", "base [1]b!ok", "base [2]c!ok"]
    assert state["g"] == ["ok", "ok", "ok"]
    # Variables created before the fork are not gathered; the parent text is unchanged.
    assert state.text() == "base "

    @rl.function
    def wrong_count(s):
        forks = s.fork(2)
        forks += ["only one"]

    with pytest.raises(ValueError, match="1 exprs for 2 branches"):
        wrong_count.run(backend=endpoint)


def test_fork_of_one_sends_no_commit(fake, endpoint):
    @rl.function
    def single(s):
        s += "prefix"
        with s.copy() as c:
            c += rl.gen("inner", max_tokens=2)
        s += " after " + s["inner"][0]

    state = single.run(backend=endpoint)
    assert state.text() == "prefix after ok"
    assert [b["text"] for b in fake.generate_bodies()] == ["prefix"]
    assert fake.generate_bodies()[0]["sampling_params"]["max_new_tokens"] == 2


def test_concate_and_append_join(fake, endpoint):
    @rl.function
    def encode(s):
        s += "Docs:"
        forks = s.fork(2)
        forks += lambda i: f" doc{i}"
        forks.join(mode="concate_and_append")
        s += rl.gen("answer", max_tokens=2)

    state = encode.run(backend=endpoint)
    assert state.text() == "Docs: doc0 doc1ok"
    paths = fake.paths()
    assert paths.count("/concate_and_append_request") == 1
    concat = next(b for _, p, b in fake.requests if p == "/concate_and_append_request")
    assert set(concat) == {"src_rids", "dst_rid"} and len(concat["src_rids"]) == 2
    # Each branch's text was committed before the concatenation.
    assert {"Docs: doc0", "Docs: doc1"} <= {b["text"] for b in fake.generate_bodies()}

    @rl.function
    def bad_mode(s):
        s.fork(2).join(mode="zip")

    with pytest.raises(ValueError, match="join mode"):
        bad_mode.run(backend=endpoint)


def test_var_scope_captures_appended_text(fake, endpoint):
    fake.complete = lambda text, params: "Paris"

    @rl.function
    def scoped(s):
        s += "{"
        with s.var_scope("json"):
            s += '"city": "' + rl.gen("city", max_tokens=8) + '"'
        s += "}"

    state = scoped.run(backend=endpoint)
    assert state["json"] == '"city": "Paris"'
    assert state.text() == '{"city": "Paris"}'
