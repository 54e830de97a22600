"""Streaming: the stream flag on the wire, deltas that rebuild the text, async iteration."""

from __future__ import annotations

import asyncio

import pytest

import radixlm as rl

ANSWER = "The capital of France is Paris, a city on the Seine."


@rl.function
def two_answers(s):
    s += "Q: capital?\nA:"
    s += rl.gen("first", max_tokens=64)
    s += "\nQ: again?\nA:"
    s += rl.gen("second", max_tokens=64)


def test_stream_body_and_text_deltas(fake, endpoint):
    fake.complete = lambda text, params: ANSWER
    # Paced 3-character chunks: back to back, a busy machine may merge them into one delta.
    fake.stream_chunk_delay_s = 0.01
    state = two_answers.run(backend=endpoint, stream=True)
    deltas = list(state.text_iter())
    assert len(deltas) > 4
    assert "".join(deltas) == state.text()
    assert state.text() == f"Q: capital?\nA:{ANSWER}\nQ: again?\nA:{ANSWER}"
    first, second = fake.generate_bodies()
    assert first["stream"] is True and second["stream"] is True
    assert set(first) == {"text", "sampling_params", "stream"}
    # The latest meta_info of the stream is kept (the fake tags events with their end offset).
    assert state.get_meta_info("first")["n"] == len(ANSWER)


def test_text_iter_of_one_variable(fake, endpoint):
    fake.complete = lambda text, params: ANSWER
    state = two_answers.run(backend=endpoint, stream=True)
    deltas = list(state.text_iter("second"))
    assert "".join(deltas) == ANSWER
    assert len(deltas) > 1
    assert state["first"] == ANSWER
    # A variable that never appears ends the iteration once the program is done.
    assert list(state.text_iter("missing")) == []


def test_async_iteration_with_meta_data(fake, endpoint):
    fake.complete = lambda text, params: ANSWER

    async def collect():
        state = two_answers.run(backend=endpoint, stream=True)
        chunks = [c async for c in state.text_async_iter("first", return_meta_data=True)]
        whole = [c async for c in state.text_async_iter()]
        return chunks, whole, state

    chunks, whole, state = asyncio.run(collect())
    assert "".join(text for text, _ in chunks) == ANSWER
    assert all(isinstance(meta, dict) for _, meta in chunks)
    assert "".join(whole) == state.text()


def test_without_stream_iterators_yield_the_final_text_once(fake, endpoint):
    state = two_answers.run(backend=endpoint)
    assert list(state.text_iter()) == [state.text()]
    assert list(state.text_iter("first")) == ["ok"]


def test_stream_error_event_fails_the_stream(fake, endpoint):
    fake.fail = lambda body: (500, {"error": {"message": "boom"}})
    state = two_answers.run(backend=endpoint, stream=True)
    with pytest.raises(rl.ProgramError, match="500"):
        list(state.text_iter())


def test_exception_in_a_streamed_program_reaches_the_reader(fake, endpoint):
    @rl.function
    def broken(s):
        s += "start" + rl.gen("x", max_tokens=4)
        raise KeyError("bug in the program")

    state = broken.run(backend=endpoint, stream=True)
    with pytest.raises(rl.ProgramError, match="bug in the program"):
        list(state.text_iter())
    assert isinstance(state.error(), KeyError)
