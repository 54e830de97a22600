"""GGUF -> HF folder conversion on a tiny llama GGUF written here from a known HF model.

The GGUF is written the way llama.cpp's converter writes one (Q/K rows permuted per head,
GGUF tensor names, one Q8_0 tensor), so converting it back must reproduce the HF model's
logits exactly; two concurrent first conversions must leave one complete cache folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from radixlm.runtime.model_loader import resolve_model

NUM_HEADS, NUM_KV_HEADS = 4, 2
SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def byte_level_alphabet() -> list[str]:
    """GPT-2's printable stand-in character for each byte value 0..255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def llama_cpp_permute(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf does to q/k rows (pairs interleaved per head)."""
    head_dim = weight.shape[0] // num_heads
    return (
        weight.reshape(num_heads, 2, head_dim // 2, weight.shape[1])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def write_tiny_gguf(path: str) -> AutoModelForCausalLM:
    """Writes a tiny llama GGUF and returns the HF model holding exactly its weights."""
    tokens = byte_level_alphabet() + ["Ġt", "he"] + SPECIAL_TOKENS
    config = LlamaConfig(
        vocab_size=len(tokens),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=len(tokens) - 2,
        eos_token_id=len(tokens) - 1,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    state = {name: t.detach().numpy().copy() for name, t in model.state_dict().items()}
    # The embedding goes in as Q8_0 (like the real file); give the HF model the values the
    # GGUF really holds so both sides have identical weights.
    embed = state["model.embed_tokens.weight"]
    q8 = gguf.quants.quantize(embed, gguf.GGMLQuantizationType.Q8_0)
    state["model.embed_tokens.weight"] = gguf.quants.dequantize(q8, gguf.GGMLQuantizationType.Q8_0)
    for name, param in model.named_parameters():
        if "norm" in name:  # non-trivial norms, so a dropped norm weight would show
            state[name] = (1 + 0.1 * np.random.default_rng(1).standard_normal(param.shape)).astype(
                np.float32
            )
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_organization("TestOrg")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(NUM_HEADS)
    writer.add_head_count_kv(NUM_KV_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(config.hidden_size // NUM_HEADS)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.NORMAL] * (len(tokens) - 2) + [gguf.TokenType.CONTROL] * 2
    )
    writer.add_token_merges(["Ġ t", "h e"])
    writer.add_bos_token_id(config.bos_token_id)
    writer.add_eos_token_id(config.eos_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    writer.add_tensor("token_embd.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    writer.add_tensor("output.weight", state["lm_head.weight"])
    for layer in range(config.num_hidden_layers):
        for hf_name, gguf_name in LAYER_NAMES.items():
            weight = state[f"model.layers.{layer}.{hf_name}"]
            if gguf_name == "attn_q.weight":
                weight = llama_cpp_permute(weight, NUM_HEADS)
            elif gguf_name == "attn_k.weight":
                weight = llama_cpp_permute(weight, NUM_KV_HEADS)
            writer.add_tensor(f"blk.{layer}.{gguf_name}", weight)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("gguf") / "tiny-llama.Q8_0.gguf")
    return path, write_tiny_gguf(path)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_concurrent_first_conversions_share_one_complete_folder(tiny_gguf, cache_dir):
    gguf_path, hf_model = tiny_gguf
    env = {**os.environ, "RADIXLM_CACHE_DIR": str(cache_dir)}
    code = (
        "from radixlm.runtime.model_loader.gguf_cache import ensure_converted;"
        f"print(ensure_converted({gguf_path!r}))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=300)[0].strip() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert outputs[0] == outputs[1]
    model_dir = outputs[0]
    folders = [f for f in os.listdir(cache_dir) if not f.endswith(".lock")]
    assert folders == [os.path.basename(model_dir)]  # no temp leftovers, one folder

    # The converted folder is a plain HF model equal to the one the GGUF was made from.
    converted = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    ids = torch.randint(0, 260, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, hf_model(ids).logits, rtol=0, atol=1e-5)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer(" the", add_special_tokens=False)["input_ids"] == [256, 257]  # merges
    with open(os.path.join(model_dir, "tokenizer_config.json"), encoding="utf-8") as f:
        assert json.load(f)["chat_template"] == CHAT_TEMPLATE
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_resolve_gguf_path_reports_organization_and_name(tiny_gguf, cache_dir, monkeypatch):
    monkeypatch.setenv("RADIXLM_CACHE_DIR", str(cache_dir))
    resolved = resolve_model(tiny_gguf[0])
    assert resolved.display_path == "TestOrg/tiny-llama"
    assert resolved.weights_format == "safetensors"
    assert resolved.tokenizer_dir == resolved.model_dir
    with open(os.path.join(resolved.model_dir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    assert config["tie_word_embeddings"] is False
    assert config["rms_norm_eps"] == 1e-5
