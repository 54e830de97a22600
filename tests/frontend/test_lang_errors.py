"""Failures surface to the caller and never hang: variables, text, sync, join, submit."""

from __future__ import annotations

import threading

import pytest

import radixlm as rl
from radixlm.backend.http_client import BackendError

# Every wait in these tests must finish long before this; a hang fails the test instead.
HANG_TIMEOUT_S = 10


def finishes(fn, timeout_s: float = HANG_TIMEOUT_S):
    """Runs fn on a thread; returns (result, exception); fails the test if it hangs."""
    out: dict = {}

    def target():
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), "the call hung"
    return out.get("result"), out.get("error")


def fail_on(marker: str):
    return lambda body: (500, {"detail": "boom"}) if marker in str(body.get("text")) else None


@rl.function
def chain(s):
    s += "first:" + rl.gen("a", max_tokens=2)
    s += " BAD:" + rl.gen("b", max_tokens=2)
    s += " third:" + rl.gen("c", max_tokens=2)


def test_every_pending_wait_raises_after_a_backend_error(fake, endpoint):
    fake.fail = fail_on("BAD")
    state = chain.run(backend=endpoint)
    # Finished before the failure: still readable.
    assert finishes(lambda: state["a"])[0] == "ok"
    for read in (lambda: state["b"], lambda: state["c"], state.text, state.sync, state.messages):
        _, error = finishes(read)
        assert isinstance(error, rl.ProgramError)
        assert isinstance(error.__cause__, BackendError)
        assert error.__cause__.status_code == 500 and "boom" in str(error)
    assert isinstance(state.error(), BackendError)
    assert len(fake.generate_bodies()) == 2  # nothing after the failure was sent


def test_appending_to_a_failed_state_raises(fake, endpoint):
    fake.fail = fail_on("x")

    @rl.function
    def keeps_going(s):
        s += "x" + rl.gen("a")
        s.sync()

    _, error = finishes(lambda: keeps_going.run(backend=endpoint))
    assert isinstance(error, rl.ProgramError)


def test_a_failing_branch_fails_the_join_instead_of_hanging(fake, endpoint):
    fake.fail = fail_on("branch 1")

    @rl.function
    def branches(s):
        s += "shared prefix. "
        forks = s.fork(3)
        forks += lambda i: f"branch {i}" + rl.gen("out", max_tokens=2)
        forks.join()

    _, error = finishes(lambda: branches.run(backend=endpoint))
    assert isinstance(error, rl.ProgramError) and "500" in str(error)


def test_parent_waiting_on_a_failed_branch_variable_raises(fake, endpoint):
    fake.fail = fail_on("branch")

    @rl.function
    def reads_branch(s):
        s += "p"
        forks = s.fork(2)
        forks += "branch" + rl.gen("out", max_tokens=2)
        return forks[0]["out"]

    _, error = finishes(lambda: reads_branch.run(backend=endpoint))
    assert isinstance(error, rl.ProgramError)


def test_program_exceptions_propagate_from_run(fake, endpoint):
    @rl.function
    def buggy(s):
        s += "x"
        raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError):
        buggy.run(backend=endpoint)


def test_ended_state_takes_no_more_input(fake, endpoint):
    state = chain.run(backend=endpoint)
    state.sync()
    with pytest.raises(RuntimeError, match="ended"):
        state += "more"


def test_server_down_is_an_error_not_a_hang():
    fake_url = "http://127.0.0.1:9"  # discard port: nothing listens
    _, error = finishes(lambda: rl.RuntimeEndpoint(fake_url))
    assert error is not None
