"""Paged, ragged attention through the torch backend: chunked prefill, cached prefixes shared
between sequences, padded decode batches and scattered KV slots all give the logits of one
plain forward over each whole sequence."""

from __future__ import annotations

import pytest
import torch

from radixlm.runtime.model_config import ModelConfig
from radixlm.runtime.model_loader import resolve_model
from radixlm.runtime.model_runner import ModelRunner
from tests.runtime.conftest import save_tiny_hf_model
from tests.runtime.test_model_vs_hf import TINY_CONFIGS, VOCAB, assert_logits_close


@pytest.fixture(scope="module", params=["cpu_kernel", "gather"])
def tiny_runner(request, tmp_path_factory, default_model):
    """Every pass through the compiled CPU kernel, and through the gather + SDPA path that
    CUDA tensors and machines without a compiler take."""
    # Llama-3 tiny: GQA 4:1, so the grouped-query views are exercised.
    model_dir = save_tiny_hf_model(
        TINY_CONFIGS["llama3"](), tmp_path_factory.mktemp("llama3"), default_model.tokenizer_dir
    )
    resolved = resolve_model(str(model_dir))
    runner = ModelRunner(
        ModelConfig.from_dir(resolved.model_dir),
        resolved,
        max_total_tokens=1024,
        max_running_requests=8,
        context_len=256,
    )
    if request.param == "gather":
        runner.attn_backend._cpu_kernel = None
    elif runner.attn_backend._cpu_kernel is None:
        pytest.skip("no C++ compiler for the CPU kernel")
    return runner


def random_ids(n: int, seed: int) -> list[int]:
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def full_forward(driver, ids: list[int]) -> torch.Tensor:
    """Reference: the whole sequence in one prefill, logits for every position."""
    (logits,) = driver.extend([(driver.new_seq(), ids)], all_logits=True)
    return logits


def test_chunked_prefill_then_decode_equals_one_forward(tiny_runner, driver_for):
    driver = driver_for(tiny_runner)
    ids = random_ids(50, seed=0)
    seq = driver.new_seq()
    (first,) = driver.extend([(seq, ids[:20])], all_logits=True)
    (second,) = driver.extend([(seq, ids[20:37])], all_logits=True, shuffle_seed=1)
    steps = [driver.decode([(seq, token)]) for token in ids[37:]]
    assert_logits_close(torch.cat([first, second, *steps]), full_forward(driver, ids))


def test_ragged_batch_with_shared_prefix_equals_each_alone(tiny_runner, driver_for):
    driver = driver_for(tiny_runner)
    shared = random_ids(24, seed=1)
    base = driver.new_seq()
    driver.extend([(base, shared)])
    # a reuses all 24 cached prefix slots, b only the first 16, c has no prefix.
    a = driver.new_seq(shared_prefix=base, prefix_len=24)
    b = driver.new_seq(shared_prefix=base, prefix_len=16)
    c = driver.new_seq()
    new_a, new_b, new_c = random_ids(9, seed=2), random_ids(5, seed=3), random_ids(13, seed=4)
    extend_logits = driver.extend(
        [(a, new_a), (b, new_b), (c, new_c)], all_logits=True, shuffle_seed=5
    )
    # Two padded decode steps: lengths 33/21/13, then 34/22/14.
    decode_tokens = [random_ids(3, seed=6), random_ids(3, seed=7)]
    decode_logits = [
        driver.decode(list(zip((a, b, c), step, strict=True))) for step in decode_tokens
    ]

    full_ids = [
        shared + new_a + [step[0] for step in decode_tokens],
        shared[:16] + new_b + [step[1] for step in decode_tokens],
        new_c + [step[2] for step in decode_tokens],
    ]
    for i, (ids, num_new) in enumerate(zip(full_ids, (9, 5, 13), strict=True)):
        ref = full_forward(driver, ids)
        ours = torch.cat([extend_logits[i], *(step[i : i + 1] for step in decode_logits)])
        assert_logits_close(ours, ref[len(ids) - num_new - 2 :])


def test_unpadded_decode_batch_equals_each_alone(tiny_runner, driver_for):
    driver = driver_for(tiny_runner)
    prompts = [random_ids(17, seed=10), random_ids(17, seed=11)]
    seqs = [driver.new_seq() for _ in prompts]
    driver.extend(list(zip(seqs, prompts, strict=True)))
    next_tokens = random_ids(2, seed=12)
    logits = driver.decode(list(zip(seqs, next_tokens, strict=True)))
    for i, prompt in enumerate(prompts):
        assert_logits_close(logits[i : i + 1], full_forward(driver, prompt + [next_tokens[i]])[-1:])


def test_mixed_extend_pass_equals_each_alone(tiny_runner, driver_for):
    """A decode pass carrying jump-forwarded tokens: one-token rows, short multi-token extends
    (padded into length groups) and a long prompt chunk (attended alone) in one EXTEND batch."""
    driver = driver_for(tiny_runner)
    prompts = [random_ids(n, seed=20 + n) for n in (6, 40, 11, 70, 9)]
    seqs = [driver.new_seq() for _ in prompts]
    driver.extend(list(zip(seqs, prompts, strict=True)), shuffle_seed=21)
    fresh = driver.new_seq()
    # New tokens per sequence: 1, 7, 1, 3, 33 (past the batched limit); fresh: a 45-token prompt.
    news = [random_ids(n, seed=30 + i) for i, n in enumerate((1, 7, 1, 3, 33))]
    fresh_ids = random_ids(45, seed=40)
    logits = driver.extend(
        [*zip(seqs, news, strict=True), (fresh, fresh_ids)], all_logits=True, shuffle_seed=22
    )
    driver.release_all()  # the pool holds 8 rows: free them before the references
    for i, (prompt, new) in enumerate(zip(prompts, news, strict=True)):
        assert_logits_close(logits[i], full_forward(driver, prompt + new)[len(prompt) :])
        driver.release_all()
    assert_logits_close(logits[-1], full_forward(driver, fresh_ids))
