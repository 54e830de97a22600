"""SIGTERM with streams in flight: new requests get 503 at once, in-flight streams finish (or,
with --shutdown-timeout 0, end with an error event and [DONE]), the server exits 0 and leaves no
process behind. Each case owns its server, since it stops it."""

from __future__ import annotations

import signal
import time

import pytest
import requests

from tests.reliability.conftest import AUTH, MODEL, KeyedServer
from tests.reliability.processes import alive, descendants
from tests.reliability.raw_http import RawRequest

STREAM = {
    "model": MODEL,
    "prompt": "Once upon a time",
    "max_tokens": 60,
    "temperature": 0,
    "ignore_eos": True,
    "stream": True,
}


def start(*args: str) -> KeyedServer:
    return KeyedServer("--max-total-tokens", "1024", "--api-key", "reliability-key", *args)


@pytest.mark.parametrize("timeout_s", ["30", "0"])
def test_sigterm_with_streams_in_flight(timeout_s):
    server = start("--shutdown-timeout", timeout_s)
    try:
        children = descendants(server.proc.pid)
        assert len(children) >= 2
        streams = [RawRequest(server.url, "/v1/completions", STREAM, AUTH) for _ in range(4)]
        for stream in streams:
            stream.read_events(2)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        if timeout_s != "0":
            late = requests.post(
                server.url + "/v1/completions",
                headers=AUTH,
                timeout=30,
                json={"model": MODEL, "prompt": "late", "max_tokens": 2},
            )
            assert late.status_code == 503, late.text
            assert late.headers["Retry-After"] == "1"
            # Load balancers see the drain and stop routing here.
            assert requests.get(server.url + "/health", timeout=30).status_code == 503
        started = time.monotonic()
        for stream in streams:
            events = stream.read_to_done()
            last = events[-1]
            if timeout_s == "0":
                assert "error" in last, last  # aborted: an error event, then [DONE]
            else:
                assert last["choices"][0]["finish_reason"] == "length"
                assert sum(len(e["choices"][0]["text"]) for e in events if e["choices"]) > 0
            stream.close()
        assert server.proc.wait(60) == 0
        if timeout_s == "0":
            assert time.monotonic() - started < 15
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in children if alive(pid)], "a child outlived the server"
        log = server.log_text()
        assert "Traceback" not in log, log[-4000:]
    finally:
        server.stop(signal.SIGKILL)
