"""Operations: the API key guards every route but /health, nothing listens beyond the HTTP port
on loopback, /metrics agrees with the scheduler, and the throughput log line appears."""

from __future__ import annotations

import os

import openai
import pytest
import requests

from tests.reliability.conftest import API_KEY, AUTH, MODEL
from tests.reliability.processes import descendants

pytestmark = pytest.mark.usefixtures("healthy_after")

GUARDED = [
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/generate"),
    ("GET", "/health_generate"),
    ("GET", "/metrics"),
    ("GET", "/get_server_info"),
    ("GET", "/get_model_info"),
    ("GET", "/scheduler_state"),
    ("POST", "/flush_cache"),
    ("POST", "/abort_request"),
]


def test_api_key_guards_every_route_but_health(server):
    for method, path in GUARDED:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": API_KEY},
            {"X-Api-Key": "wrong"},
        ):
            res = requests.request(method, server.url + path, headers=headers, json={}, timeout=30)
            assert res.status_code == 401, (method, path, headers)
            assert res.json()["error"]["type"] == "authentication_error"
    assert requests.get(server.url + "/health", timeout=30).status_code == 200
    assert requests.get(server.url + "/v1/models", headers=AUTH, timeout=30).status_code == 200
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    good = openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)
    res = good.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert res.choices[0].message.content


def test_only_the_http_port_listens_and_only_on_loopback(server):
    pids = [server.proc.pid, *descendants(server.proc.pid)]
    listening = _tcp_listeners()
    ours = []
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in listening:
                ours.append((pid, listening[target[8:-1]]))
    assert ours == [(server.proc.pid, ("127.0.0.1", server.port))], ours


def _tcp_listeners() -> dict[str, tuple[str, int]]:
    """socket inode -> (address, port) of every listening TCP socket (IPv4 and IPv6)."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] != "0A":  # LISTEN
                    continue
                address, port = fields[1].split(":")
                if len(address) == 8:
                    host = ".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0))
                else:
                    host = address
                out[fields[9]] = (host, int(port, 16))
    return out


def test_metrics_agree_with_the_scheduler_and_latencies_are_recorded(server):
    body = {
        "model": MODEL,
        "prompt": "1, 2,",
        "max_tokens": 6,
        "temperature": 0,
        "stream": True,
        "ignore_eos": True,
    }
    with server_stream(server, body) as res:
        assert sum(1 for line in res.iter_lines() if line.startswith(b"data: ")) >= 6
    state = server.wait_idle()
    metrics = {}
    for line in server.get("/metrics").text.splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            metrics[name.split("{")[0] + _reason(name)] = float(value)
    assert metrics["radixlm:num_running_reqs"] == 0 and metrics["radixlm:num_queue_reqs"] == 0
    assert metrics["radixlm:num_aborted_requests_total"] == state["aborted"]
    assert metrics["radixlm:num_retractions_total"] == state["retractions"]
    assert metrics["radixlm:prompt_tokens_total"] == state["prompt_tokens"]
    assert metrics["radixlm:generation_tokens_total"] == state["generation_tokens"]
    assert metrics["radixlm:max_total_num_tokens"] == state["total"]
    assert metrics["radixlm:time_to_first_token_seconds_count"] >= 1
    assert metrics["radixlm:inter_token_latency_seconds_count"] >= 5
    assert metrics["radixlm:e2e_request_latency_seconds_count"] >= 1
    assert metrics["radixlm:num_requests_total:length"] >= 1


def _reason(name: str) -> str:
    marker = 'finished_reason="'
    return ":" + name.split(marker)[1].split('"')[0] if marker in name else ""


def server_stream(server, body: dict) -> requests.Response:
    return requests.post(
        server.url + "/v1/completions", json=body, headers=AUTH, stream=True, timeout=120
    )


def test_throughput_log_lines(server):
    body = {"text": "Count:", "sampling_params": {"max_new_tokens": 45, "ignore_eos": True}}
    assert server.post("/generate", body).status_code == 200
    log = server.log_text()
    assert "Prefill batch. #new-seq: " in log
    decode = [line for line in log.splitlines() if "Decode batch. #running-req: " in line]
    assert decode and "gen throughput (token/s): " in decode[-1] and "#queue-req: " in decode[-1]
