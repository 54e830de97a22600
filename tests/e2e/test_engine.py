"""The in-process Engine: same JSON as POST /generate, without HTTP."""

from __future__ import annotations

import pytest

from radixlm.runtime.engine import Engine


@pytest.fixture(scope="module")
def engine():
    with Engine(max_total_tokens=4096, grammar_backend="none") as eng:
        yield eng


def test_engine_generate_and_stream_agree(engine):
    body = {"text": "1, 2, 3,", "sampling_params": {"temperature": 0, "max_new_tokens": 8}}
    result = engine.generate(body)
    assert result["meta_info"]["completion_tokens"] == 8
    events = list(engine.generate_stream(body))
    assert events[-1]["text"] == result["text"]
    assert all(events[i + 1]["text"].startswith(events[i]["text"]) for i in range(len(events) - 1))


def test_engine_batch_info_and_flush(engine):
    results = engine.generate({"text": ["a", "b"], "sampling_params": {"max_new_tokens": 2}})
    assert len(results) == 2
    assert engine.get_model_info()["model_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert engine.get_server_info()["internal_states"][0]["ok"]
    engine.flush_cache()
    assert engine.get_server_info()["internal_states"][0]["cached"] == 0
