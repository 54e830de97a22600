"""Prometheus metrics (text format 0.0.4) under ``radixlm:`` names, for ``GET /metrics``.

Latencies (TTFT, inter-token, end-to-end) are measured in the tokenizer manager as updates
reach it; queue sizes, KV usage and token counters come from the scheduler's state reply.
Names follow SGLang's (``sglang:num_running_reqs`` -> ``radixlm:num_running_reqs``) so existing
dashboards need only the prefix changed. Non-streaming requests get one update at the end, so
their TTFT equals their end-to-end latency and they add no inter-token samples.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PREFIX = "radixlm:"
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160)
ITL_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5, 5)
E2E_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 60, 120, 300, 600, 1200)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self.name = PREFIX + name
        self.help_text = help_text
        self.buckets = tuple(float(b) for b in buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, count: int = 1) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += count
        self.sum += value * count
        self.count += count

    def render(self, labels: dict[str, str]) -> list[str]:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            cumulative += n
            bucket_labels = _labels({**labels, "le": _number(bound)})
            lines.append(f"{self.name}_bucket{bucket_labels} {cumulative}")
        lines.append(f"{self.name}_sum{_labels(labels)} {_number(self.sum)}")
        lines.append(f"{self.name}_count{_labels(labels)} {self.count}")
        return lines


@dataclass
class RequestTiming:
    """Per-request timestamps kept by the tokenizer manager (time.monotonic())."""

    created: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    last_token_at: float | None = None


class ServerMetrics:
    def __init__(self, model_name: str) -> None:
        self.labels = {"model_name": model_name}
        self.ttft = Histogram(
            "time_to_first_token_seconds", "Time to first token in seconds.", TTFT_BUCKETS
        )
        self.itl = Histogram(
            "inter_token_latency_seconds", "Time between output tokens in seconds.", ITL_BUCKETS
        )
        self.e2e = Histogram(
            "e2e_request_latency_seconds", "End-to-end request latency in seconds.", E2E_BUCKETS
        )
        self.finished: dict[str, int] = {}
        self.rejected = 0

    def observe(self, timing: RequestTiming, num_new_tokens: int, finish_type: str | None) -> None:
        """One update of a request arrived with ``num_new_tokens`` output tokens."""
        now = time.monotonic()
        if num_new_tokens:
            if timing.first_token_at is None:
                timing.first_token_at = now
                self.ttft.observe(now - timing.created)
                num_new_tokens -= 1
            if num_new_tokens and timing.last_token_at is not None:
                # Tokens that arrive together share the gap since the previous update.
                self.itl.observe((now - timing.last_token_at) / num_new_tokens, num_new_tokens)
            timing.last_token_at = now
        if finish_type is not None:
            self.e2e.observe(now - timing.created)
            self.finished[finish_type] = self.finished.get(finish_type, 0) + 1

    def count_rejected(self) -> None:
        self.rejected += 1

    def render(self, scheduler_state: dict[str, Any], num_inflight: int) -> str:
        """The whole exposition: scheduler gauges and counters, then the latency histograms."""
        s = scheduler_state
        total = s.get("total") or 0
        used = total - s.get("free", 0) - s.get("evictable", 0)
        prompt_tokens = s.get("prompt_tokens", 0)
        compiles = s.get("grammar_compiles", 0)
        lines: list[str] = []
        gauge, counter = "gauge", "counter"
        for name, kind, help_text, value in (
            ("num_running_reqs", gauge, "Requests in the running batch.", s.get("num_running", 0)),
            (
                "num_queue_reqs",
                gauge,
                "Requests waiting to run (including those waiting for a grammar).",
                s.get("num_waiting", 0) + s.get("num_grammar_queue", 0),
            ),
            (
                "num_grammar_queue_reqs",
                gauge,
                "Requests waiting for their grammar to compile.",
                s.get("num_grammar_queue", 0),
            ),
            ("num_inflight_reqs", gauge, "Requests the HTTP server is serving.", num_inflight),
            ("max_total_num_tokens", gauge, "KV cache size in tokens.", total),
            (
                "token_usage",
                gauge,
                "Fraction of the KV cache held by requests (evictable cache excluded).",
                used / total if total else 0.0,
            ),
            (
                "cache_hit_rate",
                gauge,
                "Prompt tokens served from the radix cache / prompt tokens.",
                s.get("cached_tokens", 0) / prompt_tokens if prompt_tokens else 0.0,
            ),
            (
                "gen_throughput",
                gauge,
                "Generation throughput over the last logging interval (token/s).",
                s.get("gen_throughput", 0.0),
            ),
            ("prompt_tokens_total", counter, "Prompt tokens received.", prompt_tokens),
            (
                "generation_tokens_total",
                counter,
                "Output tokens generated.",
                s.get("generation_tokens", 0),
            ),
            (
                "cached_tokens_total",
                counter,
                "Prompt tokens served from the radix cache.",
                s.get("cached_tokens", 0),
            ),
            (
                "num_aborted_requests_total",
                counter,
                "Requests aborted (disconnects, errors, shutdown).",
                s.get("aborted", 0),
            ),
            (
                "num_retractions_total",
                counter,
                "Running requests retracted to the queue because the KV cache was full.",
                s.get("retractions", 0),
            ),
            (
                "num_forward_passes_total",
                counter,
                "Model forward passes.",
                s.get("forward_passes", 0),
            ),
            (
                "num_rejected_requests_total",
                counter,
                "Requests refused with 503 because the queue was full or the server stopping.",
                self.rejected,
            ),
        ):
            lines += self._scalar(name, kind, help_text, value)
        lines += self._grammar_summary(s.get("grammar_compile_seconds", 0.0), compiles)
        lines += self._finished_counter()
        for histogram in (self.ttft, self.itl, self.e2e):
            lines += histogram.render(self.labels)
        return "\n".join(lines) + "\n"

    def _scalar(self, name: str, kind: str, help_text: str, value: float) -> list[str]:
        full = PREFIX + name
        return [
            f"# HELP {full} {help_text}",
            f"# TYPE {full} {kind}",
            f"{full}{_labels(self.labels)} {_number(value)}",
        ]

    def _grammar_summary(self, seconds: float, count: int) -> list[str]:
        name = PREFIX + "grammar_compile_seconds"
        return [
            f"# HELP {name} Time requests waited for their grammar to compile.",
            f"# TYPE {name} summary",
            f"{name}_sum{_labels(self.labels)} {_number(float(seconds))}",
            f"{name}_count{_labels(self.labels)} {count}",
        ]

    def _finished_counter(self) -> list[str]:
        name = PREFIX + "num_requests_total"
        lines = [
            f"# HELP {name} Finished requests by finish reason (stop, length, abort).",
            f"# TYPE {name} counter",
        ]
        for reason in sorted({"stop", "length", "abort", *self.finished}):
            labels = _labels({**self.labels, "finished_reason": reason})
            lines.append(f"{name}{labels} {self.finished.get(reason, 0)}")
        return lines
