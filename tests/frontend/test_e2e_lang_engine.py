"""The in-process Engine backend: the same programs, no HTTP server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import radixlm as rl

# A hung server must fail the test, not stall the suite.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def engine() -> Iterator[rl.Engine]:
    backend = rl.Engine(max_total_tokens=16384)
    yield backend
    backend.shutdown()


def test_engine_runs_gen_select_fork_and_stream(engine):
    assert engine.get_chat_template().name == "chatml"

    @rl.function
    def program(s):
        s += rl.user("Name a color.")
        s += rl.assistant(rl.gen("color", max_tokens=8))
        s += "Is it warm or cold? " + rl.select("feel", choices=["warm", "cold"])
        forks = s.fork(2)
        forks += rl.gen("more", max_tokens=4)
        forks.join()

    state = program.run(temperature=0, backend=engine)
    assert state["color"].strip()
    assert state["feel"] in ("warm", "cold")
    assert len(state["more"]) == 2
    assert state.get_meta_info("color")["completion_tokens"] > 0

    streamed = program.run(temperature=0, stream=True, backend=engine)
    assert "".join(streamed.text_iter("color")) == state["color"]
    # The rest of the program is still running on its thread: the whole text's iterator ends
    # with the program. `sync()` only waits for what the thread has submitted so far, and the
    # next test's flush_cache once found the forks' requests still running.
    assert "".join(streamed.text_iter()).startswith(state.text()[:20])


def test_engine_batch_shares_the_prefix(engine):
    @rl.function
    def shots(s, q):
        s += "Answer each question with one word. " * 8
        s += "Q: " + q + "\nA:" + rl.gen("a", max_tokens=4, stop="\n")

    rl.flush_cache(engine)
    engine.token_usage.reset()
    states = shots.run_batch([{"q": f"question {i}?"} for i in range(4)], backend=engine)
    assert all(isinstance(s["a"], str) for s in states)
    assert engine.token_usage.snapshot().cached_tokens > 0
    assert isinstance(rl.get_server_info(engine), dict)
