"""The CPU suite's report: the issue's targets computed from raw figures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "run_cpu_suite.py"


@pytest.fixture(scope="module")
def suite(bench_serving: ModuleType) -> ModuleType:
    # run_cpu_suite does `import bench_serving`; the fixture has registered that module already.
    spec = importlib.util.spec_from_file_location("run_cpu_suite", SUITE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_cpu_suite"] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


def _serving(out_tps: float, tpot_ms: float, hit: float | None = None, ideal: float | None = None):
    return {
        "completed": 8,
        "output_throughput": out_tps,
        "total_throughput": 3 * out_tps,
        "median_ttft_ms": 100.0,
        "median_tpot_ms": tpot_ms,
        "median_e2e_latency_ms": 2000.0,
        "cache_hit_rate": hit,
        "ideal_cache_hit_rate": ideal,
    }


def _peer(batch: int, in_len: int, out_tps: float, decode_tps: float) -> dict:
    return {
        "batch_size": batch,
        "input_len": in_len,
        "output_len": 128,
        "prefill_s": 0.5,
        "output_tok_s": out_tps,
        "decode_tok_s": decode_tps,
    }


def test_report_computes_the_issue_ratios(suite: ModuleType) -> None:
    env = {
        "cpu": "EPYC", "nproc": 2, "mem_gib": 24.0, "python": "3.11", "torch": "2.13",
        "transformers": "5.23", "llama_cpp_python": "0.3", "git_commit": "abc",
        "date": "2025-01-01", "loadavg_1m_at_start": 0.1, "loadavg_1m_at_end": 0.2,
    }  # fmt: skip
    server = {
        "random_c1": _serving(40.0, 20.0),  # decode 1000 / 20 ms = 50 tok/s
        "random_c32": _serving(600.0, 50.0) | {"output_throughput_runs": [580.0, 600.0]},
        "gsp_radix": _serving(300.0, 30.0, hit=0.80, ideal=0.834),
        "gsp_no_radix": _serving(100.0, 60.0, hit=0.0, ideal=0.834),
    }
    peers = {
        "hf_bf16": {"b1_in256": _peer(1, 256, 18.0, 20.0), "b32_in256": _peer(32, 256, 200.0, 0)},
        "llama_cpp": {
            "b1_in256": _peer(1, 256, 100.0, 110.0) | {"output_tok_s_runs": [100.0, 95.0, 101.0]}
        },
        "llama_cpp_before": {"b1_in256": _peer(1, 256, 120.0, 130.0)},
    }
    table = suite.report(env, server, peers)
    assert "| 50.0 | 20.0 | 2.50× | ≥ 2× |" in table  # single-stream decode vs HF bf16
    assert "| 600.0 | 200.0 | 3.00× | ≥ 2× |" in table  # concurrency 32 vs HF batch 32
    assert "| 600.0 | 100.0 | 6.00× | ≥ 4× |" in table  # concurrency 32 vs llama-cpp-python
    assert "measured before our server | 600.0 | 120.0 | 5.00× | ≥ 4× |" in table
    assert "| 300.0 | 100.0 | 3.00× | ≥ 3× |" in table  # shared prefix, radix on vs off
    assert "| 80.0 | 83.4 | -3.4 pts |" in table
    assert "| llama_cpp | 1 | 256 | 128 | 0.50 | 100.0 | 110.0 | 100.0, 95.0, 101.0 |" in table
    assert "| random_c32 | 8 | 600.0 | 1800.0 | 100.0 | 50.0 | 2000.0 | – | 580.0, 600.0 |" in table


def test_report_marks_missing_measurements(suite: ModuleType) -> None:
    env = {
        "cpu": "?", "nproc": 2, "mem_gib": 24.0, "python": "3.11", "torch": None,
        "transformers": None, "llama_cpp_python": None, "git_commit": "abc", "date": "d",
        "loadavg_1m_at_start": 0.0,
    }  # fmt: skip
    table = suite.report(env, {}, {})
    assert "| – | – | – | ≥ 4× |" in table


def test_median_run_keeps_the_middle_run_and_every_figure(suite: ModuleType) -> None:
    runs = [_peer(1, 256, tps, tps + 1) for tps in (90.0, 10.0, 100.0)]
    row = suite.median_run(runs, "output_tok_s")
    assert row["output_tok_s"] == 90.0 and row["decode_tok_s"] == 91.0
    assert row["output_tok_s_runs"] == [90.0, 10.0, 100.0]
    ours = suite.median_run([_serving(tps, 20.0) for tps in (300.0, 500.0)], "output_throughput")
    assert ours["output_throughput"] == 500.0  # an even count: the upper one, as for the peers
    assert ours["output_throughput_runs"] == [300.0, 500.0]


def test_hf_batch_runs_between_ours_leave_the_single_streams_to_the_peer_pass(
    suite: ModuleType,
) -> None:
    args = suite.argparse.Namespace(quick=False, repeats=3)
    between = suite.hf_generate_cmd(args, "bf16", single_stream=False, repeats=1)
    assert between[-5:] == ["--repeats", "1", "--input-lens", "--batch-size", "32"]
    rest = suite.hf_generate_cmd(args, "bf16", batch=False)
    assert rest[-4:] == ["--repeats", "3", "--batch-size", "0"] and "--input-lens" not in rest
    quick = suite.hf_generate_cmd(suite.argparse.Namespace(quick=True, repeats=3), "fp32")
    assert quick[quick.index("--repeats") + 1] == "1" and quick[-2:] == ["--batch-size", "32"]
    # The alternated runs join the peer pass's figures as one configuration.
    rows = [_peer(32, 256, tps, 0) for tps in (150.0, 170.0, 160.0)] + [_peer(1, 256, 18.0, 20.0)]
    configs = suite.by_config(rows)
    assert configs["b32_in256"]["output_tok_s"] == 160.0
    assert configs["b32_in256"]["output_tok_s_runs"] == [150.0, 170.0, 160.0]
    assert configs["b1_in256"]["decode_tok_s"] == 20.0
