"""Our model code through ModelRunner gives HF transformers' logits on the same weights."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
)

from radixlm.runtime.model_config import ModelConfig
from radixlm.runtime.model_loader import resolve_model
from radixlm.runtime.model_runner import ModelRunner
from tests.runtime.conftest import save_tiny_hf_model

VOCAB = 49152  # the copied SmolLM2 tokenizer's size
TINY = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=3,
    max_position_embeddings=512,
    rms_norm_eps=1e-6,
)
TINY_CONFIGS = {
    # Qwen2: q/k/v biases, tied embeddings, GQA 4:2.
    "qwen2": lambda: Qwen2Config(
        **TINY, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True
    ),
    # Qwen3: per-head q/k RMSNorm, head_dim (32) != hidden / heads (16), untied.
    "qwen3": lambda: Qwen3Config(
        **TINY,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        tie_word_embeddings=False,
    ),
    # Llama-3 rope scaling with a short original context so positions here exercise all of
    # its low / medium / high frequency bands; GQA 4:1.
    "llama3": lambda: LlamaConfig(
        **TINY,
        num_attention_heads=4,
        num_key_value_heads=1,
        tie_word_embeddings=False,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    ),
    "mistral": lambda: MistralConfig(
        **TINY, num_attention_heads=4, num_key_value_heads=2, sliding_window=None
    ),
}


def assert_logits_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    scale = ref.abs().max().item()
    diff = (ours - ref).abs().max().item()
    assert diff <= 1e-4 * scale, f"max |diff| {diff:.3g} vs logit scale {scale:.3g}"


def run_prefill_then_decode(driver, ids: list[int], num_prefill: int) -> torch.Tensor:
    """Logits for every position of ``ids``: one prefill of the first tokens (all rows), then
    one decode step per remaining token (teacher-forced)."""
    seq = driver.new_seq()
    (prefill_logits,) = driver.extend([(seq, ids[:num_prefill])], all_logits=True)
    decode_logits = [driver.decode([(seq, token)]) for token in ids[num_prefill:]]
    return torch.cat([prefill_logits, *decode_logits])


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_tiny_random_models_match_hf(name, tmp_path, default_model, driver_for):
    model_dir = save_tiny_hf_model(
        TINY_CONFIGS[name](), tmp_path / name, default_model.tokenizer_dir
    )
    resolved = resolve_model(str(model_dir))
    config = ModelConfig.from_dir(resolved.model_dir)
    runner = ModelRunner(
        config, resolved, max_total_tokens=256, max_running_requests=2, context_len=256
    )
    ids = torch.randint(0, VOCAB, (72,), generator=torch.Generator().manual_seed(1)).tolist()
    ours = run_prefill_then_decode(driver_for(runner), ids, num_prefill=60)

    hf = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    )
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0]
    assert ours.shape == ref.shape == (72, VOCAB)
    assert_logits_close(ours, ref)


def test_smollm2_matches_hf(default_model, smollm_runner, smollm_hf, driver_for):
    tokenizer = AutoTokenizer.from_pretrained(default_model.tokenizer_dir)
    messages = [{"role": "user", "content": "Name three colours of the rainbow."}]
    ids = list(
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
    )
    ours = run_prefill_then_decode(driver_for(smollm_runner), ids, num_prefill=len(ids) - 6)
    with torch.no_grad():
        ref = smollm_hf(torch.tensor([ids])).logits[0]
    assert_logits_close(ours, ref)
