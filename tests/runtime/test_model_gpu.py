"""The model runner on CUDA: the torch reference backend gives the CPU runner's logits on the
same weights, and a bf16 dummy model sizes its KV pool from mem_fraction_static."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import AutoModelForCausalLM

from radixlm.runtime.model_config import ModelConfig
from radixlm.runtime.model_loader import ResolvedModel
from radixlm.runtime.model_runner import ModelRunner
from tests.runtime.conftest import RunnerDriver
from tests.runtime.test_model_vs_hf import TINY_CONFIGS, VOCAB, assert_logits_close

CONFIGS_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "runtime", "configs")


def run_mixed_batches(runner: ModelRunner) -> torch.Tensor:
    """Chunked prefill with a cached prefix, a ragged extend batch, then padded decode steps."""
    driver = RunnerDriver(runner)
    ids = torch.randint(0, VOCAB, (80,), generator=torch.Generator().manual_seed(0)).tolist()
    a, b = driver.new_seq(), driver.new_seq()
    (first,) = driver.extend([(a, ids[:30])], all_logits=True)
    second = driver.extend([(a, ids[30:45]), (b, ids[45:52])], all_logits=True)
    steps = [driver.decode([(a, ids[52 + i]), (b, ids[66 + i])]) for i in range(14)]
    driver.release_all()
    return torch.cat([first, *second, *steps]).cpu()


@pytest.mark.gpu
def test_cuda_torch_backend_matches_cpu(tmp_path):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(TINY_CONFIGS["qwen2"](), dtype=torch.float32)
    model.save_pretrained(tmp_path)
    resolved = ResolvedModel(str(tmp_path), str(tmp_path), "safetensors", "tiny-qwen2")
    config = ModelConfig.from_dir(str(tmp_path))
    logits = {
        device: run_mixed_batches(
            ModelRunner(
                config,
                resolved,
                device=device,
                dtype=torch.float32,
                max_total_tokens=512,
                max_running_requests=4,
                context_len=256,
            )
        )
        for device in ("cpu", "cuda")
    }
    assert_logits_close(logits["cuda"], logits["cpu"])


@pytest.mark.gpu
def test_cuda_dummy_bf16_sizes_kv_pool_from_memory_fraction():
    model_dir = os.path.abspath(os.path.join(CONFIGS_DIR, "qwen2.5-0.5b"))
    resolved = ResolvedModel(model_dir, model_dir, "dummy", "qwen2.5-0.5b")
    runner = ModelRunner(
        ModelConfig.from_dir(model_dir),
        resolved,
        device="cuda",
        max_total_tokens=None,
        mem_fraction_static=0.5,
        max_running_requests=4,
        context_len=1024,
    )
    assert runner.dtype == torch.bfloat16
    # 0.5 of the GPU minus ~1 GB of weights, at 12 KiB per token: far more than a million.
    assert runner.max_total_tokens > 1_000_000
    logits = run_mixed_batches(runner)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
