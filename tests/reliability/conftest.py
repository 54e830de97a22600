"""The reliability suite's shared server and the checks every case ends with.

One server serves every case (starting one costs ~20 s): a 256-token KV pool so exhaustion is
easy to force, 4 running + 4 queued requests so a burst overflows, an 8 s grammar time limit, and
an API key so every route's protection is exercised. After each case: ``/health`` is 200, the
canary greedy request returns the text it gave at start, the scheduler is idle with the KV/radix
invariant holding and no request-owned KV, and the log holds no traceback.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.server_harness import STARTUP_TIMEOUT_S, ServerProcess

API_KEY = "reliability-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
POOL_TOKENS = 256
MAX_RUNNING = 4
MAX_QUEUED = 4
CANARY = {"text": "1, 2, 3,", "sampling_params": {"temperature": 0, "max_new_tokens": 8}}
IDLE_TIMEOUT_S = 60
GRAMMAR_TIMEOUT_S = 8


class KeyedServer(ServerProcess):
    """A ServerProcess whose readiness probe carries the API key."""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                res = requests.get(self.url + "/health_generate", headers=AUTH, timeout=30)
                if res.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("server did not become ready:\n" + self.log_text()[-4000:])

    def post(self, path: str, body, timeout: float = 300) -> requests.Response:
        # json.dumps, not requests' json=: bodies with NaN must reach the server to be refused.
        headers = {**AUTH, "Content-Type": "application/json"}
        return requests.post(
            self.url + path, data=json.dumps(body), headers=headers, timeout=timeout
        )

    def get(self, path: str, timeout: float = 60) -> requests.Response:
        return requests.get(self.url + path, headers=AUTH, timeout=timeout)

    def state(self) -> dict:
        return self.get("/scheduler_state").json()

    def canary(self) -> str:
        res = self.post("/generate", CANARY)
        assert res.status_code == 200, res.text
        return res.json()["text"]

    def wait_idle(self, timeout: float = IDLE_TIMEOUT_S) -> dict:
        """The scheduler state once nothing is running, queued or compiling."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            busy = state["num_running"] + state["num_waiting"] + state["num_grammar_queue"]
            if busy == 0 and state["request_owned"] == 0:
                return state
            assert time.monotonic() < deadline, f"server still busy after {timeout}s: {state}"
            time.sleep(0.1)


@pytest.fixture(scope="session")
def server():
    proc = KeyedServer(
        "--max-total-tokens", str(POOL_TOKENS),
        "--max-running-requests", str(MAX_RUNNING),
        "--max-queued-requests", str(MAX_QUEUED),
        # outlines builds the whole automaton up front, so its compile time limit can be hit
        # (llguidance, the default, compiles lazily and never is).
        "--grammar-backend", "outlines",
        "--grammar-compile-timeout", str(GRAMMAR_TIMEOUT_S),
        "--api-key", API_KEY,
        "--shutdown-timeout", "5",  # its own stop is not under test (test_shutdown.py is)
    )  # fmt: skip
    proc.canary_text = proc.canary()
    yield proc
    proc.stop()


def assert_healthy(server: KeyedServer) -> None:
    state = server.wait_idle()
    assert state["ok"], f"KV/radix invariant broken: {state}"
    assert state["free"] + state["evictable"] + state["locked"] == state["total"]
    assert requests.get(server.url + "/health", timeout=30).status_code == 200
    assert server.canary() == server.canary_text
    log = server.log_text()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]


@pytest.fixture
def healthy_after(server):
    """Every case on the shared server ends with the nothing-lost checks."""
    yield server
    assert_healthy(server)
