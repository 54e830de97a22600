"""Launch and shutdown: ready line, SIGTERM exits 0 with no child left and sockets removed."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import requests

from tests.reliability.processes import alive, descendants
from tests.server_harness import ServerProcess


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("whole_group", [False, True], ids=["launcher", "process-group"])
def test_sigterm_finishes_in_flight_work_and_leaves_nothing_behind(whole_group):
    # A service manager (systemd's default KillMode) signals every process of the group: the
    # children must leave the shutdown to the launcher, or in-flight requests are cut off.
    server = ServerProcess("--max-total-tokens", "4096", new_session=whole_group)
    children = descendants(server.proc.pid)
    assert len(children) >= 2  # scheduler and detokenizer
    log = server.log_text()
    assert "radixlm ready at" in log
    ipc_dirs = [line.split("ipc://")[1].strip() for line in log.splitlines() if "ipc://" in line]
    assert ipc_dirs and all(os.path.isdir(d) for d in ipc_dirs)
    result = {}

    def long_request() -> None:
        body = {
            "text": "Once upon a time",
            "sampling_params": {"max_new_tokens": 40, "ignore_eos": True},
        }
        result["res"] = requests.post(server.url + "/generate", json=body, timeout=120)

    worker = threading.Thread(target=long_request)
    worker.start()
    time.sleep(1.0)
    if whole_group:
        os.killpg(server.proc.pid, signal.SIGTERM)
    assert server.stop(signal.SIGTERM) == 0
    worker.join(60)
    assert result["res"].status_code == 200
    assert result["res"].json()["meta_info"]["completion_tokens"] == 40
    deadline = time.monotonic() + 15  # helpers like multiprocessing's resource tracker exit last
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if alive(pid)]
    assert all(not os.path.exists(d) for d in ipc_dirs)


def test_binding_defaults_to_localhost_and_warns_on_public_without_key():
    server = ServerProcess("--max-total-tokens", "2048", "--host", "0.0.0.0")
    try:
        assert "without --api-key" in server.log_text()
    finally:
        server.stop()


def test_a_dead_child_shuts_the_server_down():
    server = ServerProcess("--max-total-tokens", "2048")
    children = descendants(server.proc.pid)
    try:
        # The scheduler or the detokenizer (multiprocessing's resource tracker is a child too).
        spawned = [pid for pid in children if b"spawn_main" in read_bytes(f"/proc/{pid}/cmdline")]
        os.kill(spawned[0], signal.SIGKILL)
        assert server.proc.wait(60) == 1, server.log_text()
    finally:
        server.stop(signal.SIGKILL)
    assert "died (exit code -9); shutting down" in server.log_text()
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if alive(pid)]
