"""Prometheus exposition: names, types, cumulative buckets, and the latency bookkeeping."""

from __future__ import annotations

import re
import time

from radixlm.runtime.metrics import Histogram, RequestTiming, ServerMetrics

LABEL = r'[a-z_]+="(?:[^"\\]|\\.)*"'  # a value may hold escaped quotes
SAMPLE = re.compile(rf"^(radixlm:[a-z0-9_]+)(\{{{LABEL}(?:,{LABEL})*\}})? (\S+)$")

STATE = {
    "total": 1000,
    "free": 600,
    "evictable": 100,
    "num_running": 3,
    "num_waiting": 2,
    "num_grammar_queue": 1,
    "prompt_tokens": 400,
    "cached_tokens": 100,
    "generation_tokens": 50,
    "aborted": 4,
    "retractions": 2,
    "forward_passes": 9,
    "grammar_compiles": 2,
    "grammar_compile_seconds": 0.5,
    "gen_throughput": 12.5,
}


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) radixlm:[a-z0-9_]+ ", line), line
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        out[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return out


def test_histogram_buckets_are_cumulative():
    h = Histogram("x_seconds", "x", (0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        h.observe(value)
    h.observe(0.5, count=2)
    lines = h.render({"model_name": "m"})
    buckets = [line for line in lines if "_bucket" in line]
    assert [int(b.rsplit(" ", 1)[1]) for b in buckets] == [2, 5, 6]
    assert buckets[-1].startswith('radixlm:x_seconds_bucket{model_name="m",le="+Inf"}')
    assert 'radixlm:x_seconds_count{model_name="m"} 6' in lines
    assert abs(h.sum - 4.65) < 1e-9


def test_render_exposes_scheduler_state_and_latencies():
    metrics = ServerMetrics('my "model"')
    timing = RequestTiming(created=time.monotonic() - 1.0)
    metrics.observe(timing, 1, None)  # first token after ~1 s
    metrics.observe(timing, 3, None)  # three more tokens in one update
    metrics.observe(timing, 0, "stop")
    metrics.count_rejected()
    values = samples(metrics.render(STATE, num_inflight=5))
    label = '{model_name="my \\"model\\""}'
    assert values["radixlm:num_running_reqs" + label] == 3
    assert values["radixlm:num_queue_reqs" + label] == 3  # waiting + grammar queue
    assert values["radixlm:token_usage" + label] == 0.3
    assert values["radixlm:cache_hit_rate" + label] == 0.25
    assert values["radixlm:num_aborted_requests_total" + label] == 4
    assert values["radixlm:num_retractions_total" + label] == 2
    assert values["radixlm:num_rejected_requests_total" + label] == 1
    assert values["radixlm:num_inflight_reqs" + label] == 5
    assert values["radixlm:grammar_compile_seconds_count" + label] == 2
    assert values["radixlm:time_to_first_token_seconds_count" + label] == 1
    assert values["radixlm:time_to_first_token_seconds_sum" + label] >= 1.0
    assert values["radixlm:inter_token_latency_seconds_count" + label] == 3
    assert values["radixlm:e2e_request_latency_seconds_count" + label] == 1
    stop = '{model_name="my \\"model\\"",finished_reason="stop"}'
    assert values["radixlm:num_requests_total" + stop] == 1


def test_a_non_streaming_request_adds_no_inter_token_samples():
    metrics = ServerMetrics("m")
    metrics.observe(RequestTiming(), 16, "length")
    assert metrics.ttft.count == 1 and metrics.itl.count == 0 and metrics.e2e.count == 1
