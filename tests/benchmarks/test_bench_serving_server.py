"""bench_serving end to end against the local fake server of conftest.py (native and OpenAI)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _args(bench_serving: ModuleType, base_url: str, out: Path, *extra: str) -> Any:
    return bench_serving.build_parser().parse_args(
        ["--base-url", base_url, "--output-file", str(out), "--disable-tqdm", *extra]
    )


def test_native_random_run_counts_tokens_and_latencies(
    bench_serving: ModuleType, tokenizer: Any, fake_server: Any, tmp_path: Path
) -> None:
    server, base_url = fake_server
    out = tmp_path / "res.jsonl"
    args = _args(
        bench_serving, base_url, out, "--backend", "radixlm", "--dataset-name", "random",
        "--random-input-len", "32", "--random-output-len", "9", "--random-range-ratio", "1.0",
        "--num-prompts", "12", "--max-concurrency", "4", "--output-details",
    )  # fmt: skip
    result = bench_serving.run_benchmark(args, tokenizer=tokenizer)

    assert result["completed"] == 12 and not any(result["errors"])
    assert result["total_input_tokens"] == 12 * 32
    assert result["total_output_tokens"] == 12 * 9
    assert result["output_throughput"] == pytest.approx(12 * 9 / result["duration"])
    # 9 tokens in events of 1, 2, 1, 2, ...: the multi-token gaps are spread, 8 ITLs per request.
    assert all(len(itl) == 8 for itl in result["itls"])
    assert all(ttft > 0 for ttft in result["ttfts"])
    assert server.max_in_flight <= 4
    main_payloads = [body for _, body in server.payloads][1:]  # the first one is the warm-up
    assert len(main_payloads) == 12
    assert all(body["stream"] is True for body in main_payloads)
    assert all(
        body["sampling_params"] == {"temperature": 0.0, "max_new_tokens": 9, "ignore_eos": True}
        for body in main_payloads
    )
    row = json.loads(out.read_text().splitlines()[-1])
    for key in ("request_throughput", "median_ttft_ms", "p99_itl_ms", "median_e2e_latency_ms",
                "mean_tpot_ms", "concurrency", "cache_hit_rate"):  # fmt: skip
        assert key in row


def test_native_random_ids_sends_input_ids(
    bench_serving: ModuleType, tokenizer: Any, fake_server: Any, tmp_path: Path
) -> None:
    server, base_url = fake_server
    args = _args(
        bench_serving, base_url, tmp_path / "r.jsonl", "--dataset-name", "random-ids",
        "--random-input-len", "16", "--random-output-len", "3", "--random-range-ratio", "1.0",
        "--num-prompts", "3", "--warmup-requests", "0", "--disable-ignore-eos",
    )  # fmt: skip
    result = bench_serving.run_benchmark(args, tokenizer=tokenizer)
    assert result["completed"] == 3
    bodies = [body for _, body in server.payloads]
    assert all(len(body["input_ids"]) == 16 and "text" not in body for body in bodies)
    assert all(body["sampling_params"]["ignore_eos"] is False for body in bodies)


def test_shared_prefix_hit_rate_matches_ideal_with_an_exact_cache(
    bench_serving: ModuleType, tokenizer: Any, fake_server: Any, tmp_path: Path
) -> None:
    _, base_url = fake_server
    args = _args(
        bench_serving, base_url, tmp_path / "g.jsonl", "--dataset-name", "generated-shared-prefix",
        "--gsp-num-groups", "3", "--gsp-prompts-per-group", "4", "--gsp-system-prompt-len", "60",
        "--gsp-question-len", "6", "--gsp-output-len", "4", "--max-concurrency", "1",
        "--flush-cache",
    )  # fmt: skip
    result = bench_serving.run_benchmark(args, tokenizer=tokenizer)
    assert result["completed"] == 12 and result["num_prompts"] == 12
    ideal = result["ideal_cache_hit_rate"]
    assert 0.6 < ideal < 0.9
    # Sent one at a time after a flush, an exact cache reaches the ideal; it may pass it by a
    # few tokens when two questions of a group happen to start with the same word.
    assert ideal <= result["cache_hit_rate"] < ideal + 0.05


def test_without_flush_the_warmup_prompt_is_already_cached(
    bench_serving: ModuleType, tokenizer: Any, fake_server: Any, tmp_path: Path
) -> None:
    _, base_url = fake_server
    common = [
        "--random-input-len", "20", "--random-output-len", "2", "--random-range-ratio", "1.0",
        "--num-prompts", "1", "--max-concurrency", "1",
    ]  # fmt: skip
    kept = bench_serving.run_benchmark(
        _args(bench_serving, base_url, tmp_path / "a.jsonl", *common), tokenizer=tokenizer
    )
    flushed = bench_serving.run_benchmark(
        _args(bench_serving, base_url, tmp_path / "b.jsonl", *common, "--flush-cache"),
        tokenizer=tokenizer,
    )
    assert kept["cache_hit_rate"] == pytest.approx(1.0)
    assert flushed["cache_hit_rate"] == 0.0


@pytest.mark.parametrize("backend", ["openai", "openai-chat"])
def test_openai_backends_take_counts_from_usage(
    backend: str, bench_serving: ModuleType, tokenizer: Any, fake_server: Any, tmp_path: Path
) -> None:
    server, base_url = fake_server
    args = _args(
        bench_serving, base_url, tmp_path / "o.jsonl", "--backend", backend,
        "--random-input-len", "24", "--random-output-len", "5", "--random-range-ratio", "1.0",
        "--num-prompts", "4", "--output-details",
    )  # fmt: skip
    result = bench_serving.run_benchmark(args, tokenizer=tokenizer)
    assert result["completed"] == 4 and result["total_output_tokens"] == 20
    assert result["cache_hit_rate"] is not None
    # One ITL per content chunk: 5 tokens arrive in events of 1, 2, 1, 1 tokens = 3 gaps.
    assert all(len(itl) == 3 for itl in result["itls"])
    path, body = server.payloads[-1]
    assert path == ("/v1/chat/completions" if backend == "openai-chat" else "/v1/completions")
    assert body["model"] == "fake-model" and body["max_tokens"] == 5
    assert body["stream_options"] == {"include_usage": True}


def test_unreachable_server_fails_the_warmup_loudly(
    bench_serving: ModuleType, tokenizer: Any, tmp_path: Path
) -> None:
    # Nothing listens on port 9 (discard) on the loopback.
    args = _args(bench_serving, "http://127.0.0.1:9", tmp_path / "x.jsonl", "--num-prompts", "2",
                 "--random-input-len", "8", "--random-output-len", "2")  # fmt: skip
    with pytest.raises(RuntimeError, match="warm-up failed"):
        bench_serving.run_benchmark(args, tokenizer=tokenizer)


def test_failed_requests_are_recorded_not_fatal(
    bench_serving: ModuleType, tokenizer: Any, tmp_path: Path
) -> None:
    args = _args(bench_serving, "http://127.0.0.1:9", tmp_path / "x.jsonl", "--num-prompts", "2",
                 "--random-input-len", "8", "--random-output-len", "2", "--warmup-requests", "0",
                 "--output-details")  # fmt: skip
    with pytest.warns(UserWarning, match="all requests failed"):
        result = bench_serving.run_benchmark(args, tokenizer=tokenizer)
    assert result["completed"] == 0 and result["total_output_tokens"] == 0
    assert all(err for err in result["errors"])
