"""bench_serving's datasets and metric arithmetic, without a server."""

from __future__ import annotations

import asyncio
import sys
import time
from types import ModuleType
from typing import Any

import numpy as np
import pytest


def test_random_text_prompts_retokenize_to_their_exact_length(
    bench_serving: ModuleType, tokenizer: Any
) -> None:
    rows = bench_serving.sample_random_requests(
        40, 12, 20, 1.0, tokenizer, np.random.default_rng(0)
    )
    assert len(rows) == 20
    for row in rows:
        assert isinstance(row.prompt, str)
        assert len(tokenizer.encode(row.prompt, add_special_tokens=False)) == 40
        assert row.prompt_len == 40 and row.output_len == 12


def test_random_lengths_follow_the_range_ratio_and_the_seed(
    bench_serving: ModuleType, tokenizer: Any
) -> None:
    def sample(seed: int) -> list[Any]:
        return bench_serving.sample_random_requests(
            64, 32, 200, 0.5, tokenizer, np.random.default_rng(seed)
        )

    rows = sample(3)
    in_lens = [r.prompt_len for r in rows]
    out_lens = [r.output_len for r in rows]
    assert min(in_lens) >= 32 and max(in_lens) <= 64 and len(set(in_lens)) > 10
    assert min(out_lens) >= 16 and max(out_lens) <= 32 and len(set(out_lens)) > 5
    assert [r.prompt for r in sample(3)] == [r.prompt for r in rows]
    assert [r.prompt for r in sample(4)] != [r.prompt for r in rows]


def test_word_token_pool_holds_only_self_encoding_space_words(
    bench_serving: ModuleType, tokenizer: Any
) -> None:
    pool = bench_serving.word_token_pool(tokenizer)
    assert len(pool) > 10
    for token_id in pool.tolist():
        text = tokenizer.decode([token_id])
        assert text.startswith(" ") and text[1:].isalpha()
        assert tokenizer.encode(text, add_special_tokens=False) == [token_id]


def test_random_ids_follow_sglang_formula(bench_serving: ModuleType) -> None:
    rows = bench_serving.sample_random_ids_requests(30, 8, 6, 0.0, 1000, np.random.default_rng(1))
    for i, row in enumerate(rows):
        assert len(row.prompt) == row.prompt_len and 1 <= row.prompt_len <= 30
        assert 1 <= row.output_len <= 8
        offset = (row.prompt[0] - i) % 1000
        assert row.prompt == [(offset + i + j) % 1000 for j in range(row.prompt_len)]


def test_generated_shared_prefix_groups_and_ideal_hit_rate(
    bench_serving: ModuleType, tokenizer: Any
) -> None:
    rows = bench_serving.sample_generated_shared_prefix_requests(
        3, 4, 50, 10, 7, tokenizer, np.random.default_rng(2)
    )
    assert len(rows) == 12 and all(r.output_len == 7 for r in rows)
    assert [r.prefix_group for r in rows] != sorted(r.prefix_group for r in rows)  # shuffled
    for group in range(3):
        members = [r for r in rows if r.prefix_group == group]
        assert len(members) == 4
        system = members[0].prompt.split("\n\n")[0]
        assert all(r.prompt.startswith(system + "\n\n") for r in members)
        # The shared prefix is the system prompt plus the "\n\n" token(s), never a question word.
        system_len = len(tokenizer.encode(system, add_special_tokens=False))
        assert system_len == 50
        assert 50 < members[0].shared_prefix_len <= 52
        assert all(r.prompt_len == len(tokenizer.encode(r.prompt)) for r in members)
    shared = rows[0].shared_prefix_len
    expected = 3 * 3 * shared / sum(r.prompt_len for r in rows)
    assert bench_serving.ideal_prefix_hit_rate(rows) == pytest.approx(expected)
    assert bench_serving.ideal_prefix_hit_rate([bench_serving.DatasetRow("x", 5, 1)]) is None


def _out(bench_serving: ModuleType, **kw: Any) -> Any:
    return bench_serving.RequestOutput(**kw)


def test_calculate_metrics_matches_hand_arithmetic(
    bench_serving: ModuleType, tokenizer: Any
) -> None:
    Row = bench_serving.DatasetRow
    rows = [Row("a", 100, 10), Row("b", 50, 5), Row("c", 70, 9)]
    outputs = [
        _out(bench_serving, success=True, latency=1.0, ttft=0.1, itl=[0.1] * 9, output_len=10,
             generated_text=" the dog", server_prompt_tokens=100, cached_tokens=30),
        _out(bench_serving, success=True, latency=2.0, ttft=0.3, itl=[0.2, 0.4, 0.6, 0.5],
             output_len=5, generated_text=" fox", server_prompt_tokens=50, cached_tokens=0),
        _out(bench_serving, success=False, error="HTTP 500: boom"),
    ]  # fmt: skip
    m, output_lens = bench_serving.calculate_metrics(rows, outputs, 4.0, tokenizer)
    assert output_lens == [10, 5, 0]
    assert m.completed == 2 and m.total_input == 150 and m.total_output == 15
    assert m.request_throughput == pytest.approx(0.5)
    assert m.input_throughput == pytest.approx(150 / 4)
    assert m.output_throughput == pytest.approx(15 / 4)
    assert m.total_throughput == pytest.approx(165 / 4)
    assert m.total_output_retokenized == len(tokenizer.encode(" the dog")) + len(
        tokenizer.encode(" fox")
    )
    assert m.mean_ttft_ms == pytest.approx(200.0)
    assert m.median_ttft_ms == pytest.approx(200.0)
    assert m.p99_ttft_ms == pytest.approx(1000 * np.percentile([0.1, 0.3], 99))
    tpots = [0.9 / 9, 1.7 / 4]
    assert m.mean_tpot_ms == pytest.approx(1000 * np.mean(tpots))
    assert m.p99_tpot_ms == pytest.approx(1000 * np.percentile(tpots, 99))
    itls = [0.1] * 9 + [0.2, 0.4, 0.6, 0.5]
    assert m.mean_itl_ms == pytest.approx(1000 * np.mean(itls))
    assert m.p95_itl_ms == pytest.approx(1000 * np.percentile(itls, 95))
    assert m.max_itl_ms == pytest.approx(600.0)
    assert m.median_e2e_latency_ms == pytest.approx(1500.0)
    assert m.concurrency == pytest.approx(3.0 / 4.0)
    assert m.cache_hit_rate == pytest.approx(30 / 150)


def test_cache_hit_rate_is_none_when_the_server_reports_nothing(
    bench_serving: ModuleType, tokenizer: Any
) -> None:
    rows = [bench_serving.DatasetRow("a", 10, 2)]
    outputs = [_out(bench_serving, success=True, latency=0.5, ttft=0.1, output_len=2)]
    m, _ = bench_serving.calculate_metrics(rows, outputs, 1.0, tokenizer)
    assert m.cache_hit_rate is None
    assert m.mean_itl_ms == 0.0  # no ITL samples: reported as 0 like sglang
    assert m.mean_tpot_ms == pytest.approx(400.0)


def test_arrivals_are_immediate_at_inf_and_spread_at_a_finite_rate(
    bench_serving: ModuleType,
) -> None:
    rows = [bench_serving.DatasetRow("x", 1, 1)] * 40

    async def elapsed(rate: float) -> float:
        start = time.perf_counter()
        async for _ in bench_serving._arrivals(rows, rate, np.random.default_rng(0)):
            pass
        return time.perf_counter() - start

    assert asyncio.run(elapsed(float("inf"))) < 0.05
    # 40 exponential gaps of mean 10 ms: about 0.4 s; far below means no waiting happened.
    assert asyncio.run(elapsed(100.0)) > 0.15


def test_sessions_open_unlimited_connections(bench_serving: ModuleType) -> None:
    """`--request-rate inf` must put every request in flight at once, like sglang's client:
    aiohttp's default connector would cap it at 100 connections, httpx's at 100 too."""

    async def unlimited() -> bool:
        async with bench_serving.open_session() as session:
            if isinstance(session, bench_serving._AiohttpSession):
                return session._session.connector.limit == 0  # aiohttp: 0 = no limit
            # httpx hands None on to httpcore, which stores it as sys.maxsize.
            return session._client._transport._pool._max_connections >= sys.maxsize

    assert asyncio.run(unlimited())
