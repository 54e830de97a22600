"""Fixtures for the model, loader and attention tests: the real default model (converted
once into the shared cache), tiny random HF models saved to disk, and a small driver that
runs prefill / decode through a ModelRunner the way the scheduler does."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from radixlm.runtime.model_loader import ResolvedModel, resolve_model

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass
class Seq:
    """One sequence in the runner's pools: its req_to_token row and KV slots so far."""

    row: int
    slots: list[int] = field(default_factory=list)
    num_shared: int = 0  # leading slots borrowed from another sequence (not freed by us)


class RunnerDriver:
    """Allocates rows/slots and builds ForwardBatches like the scheduler does."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.live: list[Seq] = []

    def new_seq(self, shared_prefix: Seq | None = None, prefix_len: int = 0) -> Seq:
        row = self.runner.req_to_token_pool.alloc()
        assert row is not None
        seq = Seq(row)
        if shared_prefix is not None:
            seq.slots = shared_prefix.slots[:prefix_len]
            seq.num_shared = prefix_len
            self.runner.req_to_token_pool.write(row, 0, seq.slots)
        self.live.append(seq)
        return seq

    def _append_slots(self, seq: Seq, num: int, shuffle_seed: int | None) -> list[int]:
        slots = self.runner.token_allocator.alloc(num)
        assert slots is not None
        if shuffle_seed is not None:  # scattered slots: the gather must not assume order
            import random

            random.Random(shuffle_seed).shuffle(slots)
        self.runner.req_to_token_pool.write(seq.row, len(seq.slots), slots)
        seq.slots.extend(slots)
        return slots

    def extend(
        self, items: list[tuple[Seq, list[int]]], all_logits: bool = False, shuffle_seed=None
    ):
        """Runs one EXTEND batch; returns per sequence its logits, (rows, vocab) float32:
        every new token's if ``all_logits`` else only the last one's."""
        import torch

        from radixlm.runtime.forward_batch import ForwardMode, build_forward_batch

        prefix_lens = [len(seq.slots) for seq, _ in items]
        out_cache_loc: list[int] = []
        for seq, ids in items:
            out_cache_loc += self._append_slots(seq, len(ids), shuffle_seed)
        logits_indices, counts, start = [], [], 0
        for _, ids in items:
            rows = list(range(start, start + len(ids))) if all_logits else [start + len(ids) - 1]
            logits_indices += rows
            counts.append(len(rows))
            start += len(ids)
        batch = build_forward_batch(
            ForwardMode.EXTEND,
            [ids for _, ids in items],
            prefix_lens,
            [seq.row for seq, _ in items],
            out_cache_loc,
            logits_indices,
            device=self.runner.device,
        )
        return list(torch.split(self.runner.forward(batch), counts))

    def decode(self, items: list[tuple[Seq, int]]):
        """Runs one DECODE batch; returns (batch, vocab) float32 logits."""
        from radixlm.runtime.forward_batch import ForwardMode, build_forward_batch

        prefix_lens = [len(seq.slots) for seq, _ in items]
        out_cache_loc = [self._append_slots(seq, 1, None)[0] for seq, _ in items]
        batch = build_forward_batch(
            ForwardMode.DECODE,
            [[token] for _, token in items],
            prefix_lens,
            [seq.row for seq, _ in items],
            out_cache_loc,
            device=self.runner.device,
        )
        return self.runner.forward(batch)

    def release_all(self) -> None:
        for seq in self.live:
            self.runner.token_allocator.free(seq.slots[seq.num_shared :])
            self.runner.req_to_token_pool.free(seq.row)
        self.live = []


@pytest.fixture(scope="session")
def default_model() -> ResolvedModel:
    """The default SmolLM2-135M-Instruct, converted from its GGUF once per cache folder."""
    return resolve_model(None)


@pytest.fixture(scope="session")
def smollm_runner(default_model):
    from radixlm.runtime.model_config import ModelConfig
    from radixlm.runtime.model_runner import ModelRunner

    config = ModelConfig.from_dir(default_model.model_dir)
    return ModelRunner(
        config, default_model, max_total_tokens=4096, max_running_requests=16, context_len=1024
    )


@pytest.fixture(scope="session")
def smollm_hf(default_model):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        default_model.model_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()


@pytest.fixture
def driver_for():
    """driver_for(runner) -> RunnerDriver; everything it allocated is freed after the test."""
    drivers: list[RunnerDriver] = []

    def make(runner) -> RunnerDriver:
        drivers.append(RunnerDriver(runner))
        return drivers[-1]

    yield make
    for driver in drivers:
        driver.release_all()


def save_tiny_hf_model(config, out_dir: Path, tokenizer_dir: str, seed: int = 0) -> Path:
    """Saves a randomly initialised HF model for ``config`` (safetensors) plus the default
    model's tokenizer, i.e. a folder resolve_model accepts as a local HF model."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # HF initialises norms to 1 and biases to 0; random values make the test see them.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.normal_(1.0 if "norm" in name else 0.0, 0.1)
    model.save_pretrained(out_dir)
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(tokenizer_dir, name), out_dir / name)
    return out_dir


def read_json(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
