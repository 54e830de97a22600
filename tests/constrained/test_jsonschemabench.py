"""A fixed JSONSchemaBench sample: every test instance walked through each backend.

A valid instance whose canonical tokens hit a masked token (or that does not end accepting) is
wrongly rejected; an invalid one that walks to an accepting state is wrongly accepted. The
backends we ship as fail-closed (outlines, llguidance) must accept no invalid instance. The full
per-subset table comes from benchmarks/jsonschemabench_coverage.py (docs/constrained.md).
"""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest

from radixlm.constrained import GrammarError, GrammarSpec, create_grammar_backend
from tests.constrained.conftest import DATA_DIR

SAMPLE = [
    "Github_easy/o12604.json",
    "Github_easy/o13652.json",
    "Github_medium/o41283.json",
    "Github_trivial/o10026.json",
    "Glaiveai2K/calculate_age_difference_d1ef7543.json",
    "Handwritten/dep7.json",
    "Snowplow/sp_156_Normalized.json",
    "Kubernetes/kb_643_Normalized.json",
    "WashingtonPost/wp_65_Normalized.json",
]


def walk_accepts(grammar, token_ids: list[int], mask: np.ndarray) -> bool:
    matcher = grammar.new_matcher()
    for token in token_ids:
        matcher.fill_allowed_mask(mask)
        if not mask[token]:
            return False
        matcher.accept_token(token)
    return matcher.is_accepting()


@pytest.mark.parametrize("name", ["outlines", "llguidance", "xgrammar"])
def test_instances_on_the_sample(name, vocab, hf_tokenizer) -> None:
    if name != "outlines":
        pytest.importorskip(name)
    backend = create_grammar_backend(name, vocab)
    counts: collections.Counter = collections.Counter()
    mask = np.zeros(vocab.vocab_size, dtype=bool)
    for rel in SAMPLE:
        case = json.loads((DATA_DIR / rel).read_text())
        try:
            grammar = backend.compile(GrammarSpec.from_schema(case["schema"]))
        except GrammarError:
            counts["refused"] += 1
            continue
        counts["compiled"] += 1
        for test in case["tests"]:
            text = json.dumps(test["data"], separators=(", ", ": "), ensure_ascii=False)
            accepted = walk_accepts(grammar, hf_tokenizer.encode(text), mask)
            kind = "valid" if test["valid"] else "invalid"
            counts[kind] += 1
            counts[f"{kind}_wrong"] += accepted != test["valid"]
    print(name, dict(counts))
    assert counts["compiled"] >= len(SAMPLE) - 2, counts
    assert counts["valid"] > 0 and counts["invalid"] > 0
    if name in ("outlines", "llguidance"):
        assert counts["invalid_wrong"] == 0, f"{name} accepted invalid instances: {counts}"
    assert counts["valid_wrong"] <= counts["valid"] // 2, counts
