"""Greedy generation through ModelRunner (prefill + decode steps on the paged KV pool) equals
HF transformers' ``generate(do_sample=False)`` on the real default model."""

from __future__ import annotations

import torch
from transformers import AutoTokenizer

NUM_NEW_TOKENS = 64


def chat_ids(tokenizer, question: str) -> list[int]:
    messages = [{"role": "user", "content": question}]
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    return list(encoded["input_ids"])


def greedy(driver, prompt: list[int], max_new_tokens: int, eos_id: int) -> list[int]:
    seq = driver.new_seq()
    (logits,) = driver.extend([(seq, prompt)])
    out = [int(logits[-1].argmax())]
    while len(out) < max_new_tokens and out[-1] != eos_id:
        out.append(int(driver.decode([(seq, out[-1])])[0].argmax()))
    return out


def test_greedy_64_tokens_equal_hf_generate(default_model, smollm_runner, smollm_hf, driver_for):
    tokenizer = AutoTokenizer.from_pretrained(default_model.tokenizer_dir)
    prompt = chat_ids(tokenizer, "Write a short story about a robot who learns to paint.")
    ours = greedy(driver_for(smollm_runner), prompt, NUM_NEW_TOKENS, tokenizer.eos_token_id)
    with torch.no_grad():
        ref = smollm_hf.generate(
            torch.tensor([prompt]), max_new_tokens=NUM_NEW_TOKENS, do_sample=False
        )[0, len(prompt) :].tolist()
    assert len(ref) == NUM_NEW_TOKENS  # the story is long enough to compare all 64 tokens
    assert ours == ref, (tokenizer.decode(ours), tokenizer.decode(ref))


def test_converted_default_model_answers_sensibly(default_model, smollm_runner, driver_for):
    # Same logits as HF would not catch a conversion bug (HF loads the same folder); a wrong
    # Q/K un-permutation or dequantization turns the answer into noise.
    tokenizer = AutoTokenizer.from_pretrained(default_model.tokenizer_dir)
    prompt = chat_ids(tokenizer, "What is the capital of France?")
    answer = greedy(driver_for(smollm_runner), prompt, 16, tokenizer.eos_token_id)
    assert "Paris" in tokenizer.decode(answer)
