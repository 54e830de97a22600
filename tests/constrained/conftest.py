"""Shared fixtures: the default model's real tokenizer and the backends built on it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "jsonschemabench"


@pytest.fixture(scope="session")
def hf_tokenizer():
    from transformers import AutoTokenizer

    from radixlm.runtime.model_loader import resolve_model

    # The same converted tokenizer the server uses (converted once, cached under ~/.cache/radixlm).
    return AutoTokenizer.from_pretrained(resolve_model(None).tokenizer_dir)


@pytest.fixture(scope="session")
def vocab(hf_tokenizer):
    from radixlm.runtime.grammar_vocab import vocab_from_hf_tokenizer

    return vocab_from_hf_tokenizer(hf_tokenizer)


@pytest.fixture(scope="session")
def outlines_backend(vocab):
    from radixlm.constrained import create_grammar_backend

    return create_grammar_backend("outlines", vocab)


@pytest.fixture(scope="session")
def outlines_compact_backend(vocab):
    from radixlm.constrained import create_grammar_backend

    return create_grammar_backend("outlines", vocab, compact_json=True)


def python_regex(rust_regex: str) -> str:
    """Our emitted regexes use Rust's `\\x{HEX}`; Python spells it `\\U00HEXHEX`."""
    return re.sub(r"\\x\{([0-9A-Fa-f]+)\}", lambda m: f"\\U{int(m.group(1), 16):08x}", rust_regex)


def load_bench_file(rel: str) -> dict:
    return json.loads((DATA_DIR / rel).read_text())
