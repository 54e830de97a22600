"""Converts a llama-architecture GGUF file into a Hugging Face folder (float32 safetensors).

Run as ``python -m radixlm.runtime.model_loader.convert_gguf GGUF_PATH OUT_DIR``. It runs in its
own process because transformers' GGUF tokenizer conversion imports torch, and the caller
(the HTTP/launcher process) must stay torch-free. The weights path uses only gguf + numpy.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import gguf
import numpy as np

from radixlm.runtime.model_loader.gguf_cache import CONVERTER_VERSION, SOURCE_INFO_FILE

# GGUF tensor name (after "blk.N.") -> HF name (after "model.layers.N.").
_LAYER_TENSORS = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def _shortest(value: float) -> float:
    """1e-05 rather than 9.999999747378752e-06: GGUF stores these floats as float32."""
    return float(str(np.float32(value)))


def _unpermute_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undoes llama.cpp's Q/K row permutation.

    llama.cpp stores each head's rotary pairs interleaved (GPT-J style, rows 0,1 = pair 0);
    HF Llama rotates the first half of a head against the second half. Within each head the
    converter mapped row (half h, pair i) to row 2*i + h; this maps it back.
    """
    out_dim = weight.shape[0]
    # (num_heads, head_dim // 2, 2, in_dim) -> (num_heads, 2, head_dim // 2, in_dim)
    return (
        weight.reshape(num_heads, out_dim // num_heads // 2, 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def convert_weights(reader: Any, num_heads: int, num_kv_heads: int) -> dict[str, np.ndarray]:
    tensors: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        name = tensor.name
        if name in _GLOBAL_TENSORS:
            hf_name = _GLOBAL_TENSORS[name]
        elif name.startswith("blk."):
            _, layer, rest = name.split(".", 2)
            if rest not in _LAYER_TENSORS:
                raise ValueError(f"unexpected GGUF tensor {name!r}")
            hf_name = f"model.layers.{layer}.{_LAYER_TENSORS[rest]}"
        elif name == "rope_freqs.weight":
            continue  # llama3 rope factors; recomputed from config.json's rope_scaling
        else:
            raise ValueError(f"unexpected GGUF tensor {name!r}")
        # GGUF lists dims fastest-first; numpy (and HF) order is the reverse: (out, in).
        shape = tuple(int(d) for d in reversed(tensor.shape))
        weight = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape)
        weight = np.ascontiguousarray(weight, dtype=np.float32)
        if hf_name.endswith("q_proj.weight"):
            weight = _unpermute_rows(weight, num_heads)
        elif hf_name.endswith("k_proj.weight"):
            weight = _unpermute_rows(weight, num_kv_heads)
        tensors[hf_name] = weight
    return tensors


def build_config(reader: Any, tied: bool) -> dict[str, Any]:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"only llama-architecture GGUF files are supported, got {arch!r}")

    def meta(key: str, default: Any = None) -> Any:
        return _field(reader, f"llama.{key}", default)

    hidden_size = int(meta("embedding_length"))
    num_heads = int(meta("attention.head_count"))
    tokens = reader.fields["tokenizer.ggml.tokens"]
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "mlp_bias": False,
        "hidden_act": "silu",
        "hidden_size": hidden_size,
        "intermediate_size": int(meta("feed_forward_length")),
        "num_hidden_layers": int(meta("block_count")),
        "num_attention_heads": num_heads,
        "num_key_value_heads": int(meta("attention.head_count_kv", num_heads)),
        "head_dim": int(meta("rope.dimension_count", hidden_size // num_heads)),
        "max_position_embeddings": int(meta("context_length")),
        "rms_norm_eps": _shortest(meta("attention.layer_norm_rms_epsilon")),
        "rope_theta": _shortest(meta("rope.freq_base", 10000.0)),
        "vocab_size": int(meta("vocab_size", len(tokens.data))),
        "tie_word_embeddings": tied,
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
        "pad_token_id": _field(reader, "tokenizer.ggml.padding_token_id"),
        "torch_dtype": "float32",
    }


def write_tokenizer(reader: Any, gguf_path: str, out_dir: str, context_len: int) -> None:
    from tokenizers import pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(
        os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path)
    )
    if _field(reader, "tokenizer.ggml.pre") == "smollm":
        # llama.cpp's "smollm" pre-tokenizer isolates every digit before the GPT-2 split,
        # as SmolLM2's own tokenizer.json does; transformers' GGUF converter omits that step.
        tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    tokenizer.model_max_length = context_len
    tokenizer.save_pretrained(out_dir)
    # Keep the chat template inside tokenizer_config.json, where every client looks first.
    config_path = os.path.join(out_dir, "tokenizer_config.json")
    with open(config_path, encoding="utf-8") as f:
        tokenizer_config = json.load(f)
    tokenizer_config["chat_template"] = _field(reader, "tokenizer.chat_template")
    tokenizer_config["add_bos_token"] = bool(_field(reader, "tokenizer.ggml.add_bos_token", False))
    tokenizer_config["clean_up_tokenization_spaces"] = False
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(tokenizer_config, f, indent=2, ensure_ascii=False)
    jinja_path = os.path.join(out_dir, "chat_template.jinja")
    if os.path.exists(jinja_path):
        os.remove(jinja_path)


def display_name(reader: Any, gguf_path: str) -> str:
    """ "HuggingFaceTB/SmolLM2-135M-Instruct" for "SmolLM2-135M-Instruct.Q4_1.gguf"."""
    stem = os.path.basename(gguf_path).split(".")[0]
    organization = _field(reader, "general.organization")
    return f"{organization}/{stem}" if organization else stem


def convert(gguf_path: str, out_dir: str) -> None:
    from safetensors.numpy import save_file

    reader = gguf.GGUFReader(gguf_path)
    tied = not any(t.name == "output.weight" for t in reader.tensors)
    config = build_config(reader, tied)
    tensors = convert_weights(reader, config["num_attention_heads"], config["num_key_value_heads"])
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    generation_config = {
        key: config[key] for key in ("bos_token_id", "eos_token_id", "pad_token_id")
    }
    with open(os.path.join(out_dir, "generation_config.json"), "w", encoding="utf-8") as f:
        json.dump(generation_config, f, indent=2)
    write_tokenizer(reader, gguf_path, out_dir, config["max_position_embeddings"])
    source_info = {
        "display_path": display_name(reader, gguf_path),
        "gguf_path": os.path.abspath(gguf_path),
        "converter_version": CONVERTER_VERSION,
        # How the layers' matrices were stored (e.g. ["Q4_1"]): the runner re-packs 4-bit
        # ones losslessly instead of running the dequantized float32 copy.
        "linear_weight_types": sorted(
            {
                t.tensor_type.name
                for t in reader.tensors
                if t.name.startswith("blk.") and len(t.shape) == 2
            }
        ),
    }
    with open(os.path.join(out_dir, SOURCE_INFO_FILE), "w", encoding="utf-8") as f:
        json.dump(source_info, f, indent=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("gguf_path")
    parser.add_argument("out_dir")
    args = parser.parse_args()
    convert(args.gguf_path, args.out_dir)


if __name__ == "__main__":
    main()
