"""What the runtime needs to know about a model, read from its config.json with plain json.

Torch-free: the HTTP/launcher process reads it too (context length, EOS ids).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

# Architectures whose attention projections always carry a bias, whatever config.json says
# (Qwen2 configs have no `attention_bias` key; their q/k/v projections have biases).
_QKV_BIAS_MODEL_TYPES = frozenset({"qwen2"})
# Architectures that RMS-normalize each query/key head before rotary (Qwen3).
_QK_NORM_MODEL_TYPES = frozenset({"qwen3"})
_ROPE_TYPES = frozenset({"default", "linear", "llama3"})


@dataclass(frozen=True)
class RopeScaling:
    """Rotary frequency scaling; ``rope_type`` is "linear" or "llama3"."""

    rope_type: str
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: RopeScaling | None
    tie_word_embeddings: bool
    context_len: int
    eos_token_ids: tuple[int, ...]
    bos_token_id: int | None
    attention_bias: bool
    qk_norm: bool

    @staticmethod
    def from_dir(model_dir: str) -> ModelConfig:
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        generation_config: dict[str, Any] = {}
        generation_path = os.path.join(model_dir, "generation_config.json")
        if os.path.isfile(generation_path):
            with open(generation_path, encoding="utf-8") as f:
                generation_config = json.load(f)
        return ModelConfig.from_dict(config, generation_config)

    @staticmethod
    def from_dict(
        config: dict[str, Any], generation_config: dict[str, Any] | None = None
    ) -> ModelConfig:
        architectures = config.get("architectures") or []
        if not architectures:
            raise ValueError("config.json has no `architectures` entry")
        model_type = str(config.get("model_type", ""))
        hidden_act = config.get("hidden_act", "silu")
        if hidden_act != "silu":
            raise ValueError(f"unsupported hidden_act {hidden_act!r} (only silu)")
        if config.get("use_sliding_window", False):
            raise ValueError("sliding-window attention is not supported")
        num_heads = int(config["num_attention_heads"])
        hidden_size = int(config["hidden_size"])
        head_dim = config.get("head_dim") or hidden_size // num_heads
        context_len = int(config.get("max_position_embeddings", 2048))
        # Mistral v0.1 attends within a 4096-token window; capping the context keeps our
        # full-causal attention exact instead of silently wrong beyond the window.
        sliding_window = config.get("sliding_window")
        if model_type == "mistral" and sliding_window:
            context_len = min(context_len, int(sliding_window))
        rope_theta, rope_scaling = _parse_rope(config)
        return ModelConfig(
            architecture=str(architectures[0]),
            model_type=model_type,
            vocab_size=int(config["vocab_size"]),
            hidden_size=hidden_size,
            intermediate_size=int(config["intermediate_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(config.get("num_key_value_heads") or num_heads),
            head_dim=int(head_dim),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            context_len=context_len,
            eos_token_ids=_eos_ids(config, generation_config or {}),
            bos_token_id=config.get("bos_token_id"),
            attention_bias=model_type in _QKV_BIAS_MODEL_TYPES
            or bool(config.get("attention_bias", False)),
            qk_norm=model_type in _QK_NORM_MODEL_TYPES,
        )


def _parse_rope(config: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    # transformers >= 5 writes `rope_parameters` (theta and scaling together); older configs
    # have a top-level `rope_theta` and an optional `rope_scaling`.
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_theta = float(params.get("rope_theta", config.get("rope_theta", 10000.0)))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in _ROPE_TYPES:
        raise ValueError(f"unsupported rope_type {rope_type!r}; supported: {sorted(_ROPE_TYPES)}")
    if rope_type == "default":
        return rope_theta, None
    scaling = RopeScaling(rope_type=rope_type, factor=float(params["factor"]))
    if rope_type == "llama3":
        scaling = RopeScaling(
            rope_type=rope_type,
            factor=float(params["factor"]),
            low_freq_factor=float(params["low_freq_factor"]),
            high_freq_factor=float(params["high_freq_factor"]),
            original_max_position_embeddings=int(params["original_max_position_embeddings"]),
        )
    return rope_theta, scaling


def _eos_ids(config: dict[str, Any], generation_config: dict[str, Any]) -> tuple[int, ...]:
    # Instruct models often list their end-of-turn token only in generation_config.json.
    ids: list[int] = []
    for source in (config, generation_config):
        value = source.get("eos_token_id")
        for token_id in value if isinstance(value, list) else [value]:
            if token_id is not None and token_id not in ids:
                ids.append(int(token_id))
    return tuple(ids)
