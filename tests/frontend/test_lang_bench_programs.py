"""The program benchmark's pure parts: the ideal prefill count and its workloads' shapes."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import radixlm as rl
from radixlm.tracer import extract_prefix_by_tracing

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_programs.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_programs", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_programs"] = module
    spec.loader.exec_module(module)
    return module


def test_ideal_prefill_counts_distinct_prefixes_once():
    bench = load_bench()
    prompts = ["abc", "abd", "abc", "b"]
    assert bench.ideal_prefill_tokens(prompts, lambda text: [ord(c) for c in text]) == 5


def test_workload_shapes():
    bench = load_bench()
    template = rl.get_chat_template("chatml")

    classify, questions, _ = bench.workload_classification(random.Random(0), 1.0)
    assert len(questions) == 64
    prefix = extract_prefix_by_tracing(classify.func, classify.arg_names, {}, template)
    # The 20 shots are the shared prefix that run_batch sends once.
    assert prefix.count("\nTopic: ") == 20 and prefix.endswith("Text: ")

    conversation, batch, _ = bench.workload_multi_turn(random.Random(0), 1.0)
    assert len(batch) == 16 and all(len(b["turns"]) == 4 for b in batch)

    tree, documents, _ = bench.workload_fork_tree(random.Random(0), 0.5)
    traced = tree.trace(document="d")
    assert [n.size for n in traced.nodes if type(n).__name__ == "Fork"] == [3]
    assert len(traced.variables["angle"]) == 3 and len(documents) == 2
