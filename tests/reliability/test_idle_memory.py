"""An idle scheduler hands the memory its passes freed back to the OS (benchmarks/bench_soak.py)."""

from __future__ import annotations

import time

from radixlm.runtime.scheduler import IDLE_RELEASE_AFTER_S


def test_an_idle_scheduler_returns_freed_memory_to_the_os(healthy_after):
    server = healthy_after
    server.wait_idle()
    log_offset = len(server.log_text())
    # Prefills of different lengths free activations of different sizes.
    for words in (10, 25, 40, 60):  # the shared server's pool holds 256 tokens
        body = {
            "text": "Count: " + " ".join(map(str, range(words))),
            "sampling_params": {"max_new_tokens": 4},
        }
        res = server.post("/generate", body)
        assert res.status_code == 200, res.text
    deadline = time.monotonic() + IDLE_RELEASE_AFTER_S + 15
    while "Idle: returned" not in server.log_text()[log_offset:]:
        assert time.monotonic() < deadline, server.log_text()[log_offset:][-3000:]
        time.sleep(0.5)
