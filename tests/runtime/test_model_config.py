"""ModelConfig.from_dir reads config.json (old and transformers-5 layouts) without torch."""

from __future__ import annotations

import json

import pytest

from radixlm.runtime.model_config import ModelConfig, RopeScaling

BASE = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 1000,
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "max_position_embeddings": 4096,
}


def write(tmp_path, config: dict, generation_config: dict | None = None) -> ModelConfig:
    (tmp_path / "config.json").write_text(json.dumps(config))
    if generation_config is not None:
        (tmp_path / "generation_config.json").write_text(json.dumps(generation_config))
    return ModelConfig.from_dir(str(tmp_path))


def test_defaults_and_derived_fields(tmp_path):
    config = write(tmp_path, BASE)
    assert config.num_kv_heads == 8  # no num_key_value_heads: plain multi-head
    assert config.head_dim == 32
    assert config.context_len == 4096
    assert config.rope_scaling is None and config.rope_theta == 10000.0
    assert not config.attention_bias and not config.qk_norm and not config.tie_word_embeddings


def test_eos_ids_merge_config_and_generation_config(tmp_path):
    config = write(
        tmp_path,
        {**BASE, "eos_token_id": [128001, 128008]},
        {"eos_token_id": [128008, 128009], "bos_token_id": 128000},
    )
    assert config.eos_token_ids == (128001, 128008, 128009)


def test_llama3_rope_scaling_old_layout(tmp_path):
    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    config = write(tmp_path, {**BASE, "rope_theta": 500000.0, "rope_scaling": scaling})
    assert config.rope_theta == 500000.0
    assert config.rope_scaling == RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)


def test_rope_parameters_layout_of_transformers_5(tmp_path):
    params = {"rope_theta": 1e6, "rope_type": "linear", "factor": 2.0}
    config = write(tmp_path, {**BASE, "rope_parameters": params})
    assert config.rope_theta == 1e6
    assert config.rope_scaling == RopeScaling("linear", 2.0)


def test_unsupported_rope_type_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="yarn"):
        write(tmp_path, {**BASE, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})


def test_qwen_flags(tmp_path):
    qwen2 = write(tmp_path, {**BASE, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"})
    assert qwen2.attention_bias and not qwen2.qk_norm
    qwen3 = write(
        tmp_path,
        {**BASE, "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "head_dim": 128},
    )
    assert qwen3.qk_norm and not qwen3.attention_bias and qwen3.head_dim == 128


def test_mistral_sliding_window_caps_context(tmp_path):
    mistral = {**BASE, "model_type": "mistral", "sliding_window": 1024}
    assert write(tmp_path, mistral).context_len == 1024


def test_sliding_window_attention_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="sliding-window"):
        write(tmp_path, {**BASE, "model_type": "qwen2", "use_sliding_window": True})
