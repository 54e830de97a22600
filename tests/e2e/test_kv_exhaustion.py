"""A tiny KV pool forces retraction; outputs must equal the solo outputs and nothing leaks. Also
in the fast CPU mode, where (with AMX) prompt tokens and generated ones take different attention
kernels: a retracted request's generated tokens, recomputed in a chunk, must still get their
decode-time bits."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.server_harness import ServerProcess


@pytest.fixture(scope="module", params=["none", "auto"])
def tiny_server(request):
    server = ServerProcess(
        "--max-total-tokens", "400", "--max-running-requests", "8", "--quantization", request.param
    )
    yield server
    server.stop()


def test_retraction_keeps_outputs_identical(tiny_server):
    prompts = [f"List the numbers from {i} upward: {i}," for i in range(8)]

    def body(prompt: str) -> dict:
        return {
            "text": prompt,
            "sampling_params": {"temperature": 0, "max_new_tokens": 48, "ignore_eos": True},
        }

    solo = [tiny_server.generate(body(p)).json()["output_ids"] for p in prompts]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda p: tiny_server.generate(body(p)).json(), prompts))
    assert [r["output_ids"] for r in together] == solo
    state = tiny_server.state()
    assert state["retractions"] > 0, "the pool was not small enough to force a retraction"
    assert state["ok"] and state["request_owned"] == 0
    assert state["free"] + state["evictable"] + state["locked"] == state["total"]
