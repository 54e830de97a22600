"""Runs prefill and decode through a ModelRunner the way the scheduler does (rows, slots,
ForwardBatches), for the GPU tests. Slots are scattered on purpose: the kernels must follow
``req_to_token``, never assume a sequence's slots are contiguous."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from radixlm.runtime.forward_batch import ForwardMode, build_forward_batch
from radixlm.runtime.model_runner import ModelRunner


@dataclass
class Seq:
    row: int
    slots: list[int] = field(default_factory=list)


class Driver:
    def __init__(self, runner: ModelRunner, seed: int = 0) -> None:
        self.runner = runner
        self.rng = random.Random(seed)

    def new_seq(self, share_prefix_of: Seq | None = None, prefix_len: int = 0) -> Seq:
        """A sequence; with ``share_prefix_of``, its first ``prefix_len`` tokens reuse that
        sequence's KV slots (what a radix-cache hit hands the scheduler)."""
        row = self.runner.req_to_token_pool.alloc()
        assert row is not None
        seq = Seq(row)
        if share_prefix_of is not None:
            seq.slots = share_prefix_of.slots[:prefix_len]
            self.runner.req_to_token_pool.write(row, 0, seq.slots)
        return seq

    def _new_slots(self, seq: Seq, num: int) -> list[int]:
        slots = self.runner.token_allocator.alloc(num)
        assert slots is not None
        self.rng.shuffle(slots)
        self.runner.req_to_token_pool.write(seq.row, len(seq.slots), slots)
        seq.slots.extend(slots)
        return slots

    def extend(self, items: list[tuple[Seq, list[int]]]) -> torch.Tensor:
        """One EXTEND pass; float32 logits of each sequence's last new token, (batch, vocab)."""
        prefix_lens = [len(seq.slots) for seq, _ in items]
        out_cache_loc = [slot for seq, ids in items for slot in self._new_slots(seq, len(ids))]
        batch = build_forward_batch(
            ForwardMode.EXTEND,
            [ids for _, ids in items],
            prefix_lens,
            [seq.row for seq, _ in items],
            out_cache_loc,
            device=self.runner.device,
        )
        return self.runner.forward(batch).clone()

    def decode(self, items: list[tuple[Seq, int]]) -> torch.Tensor:
        """One DECODE pass (a CUDA graph replay when the runner has one); (batch, vocab)."""
        prefix_lens = [len(seq.slots) for seq, _ in items]
        out_cache_loc = [self._new_slots(seq, 1)[0] for seq, _ in items]
        batch = build_forward_batch(
            ForwardMode.DECODE,
            [[token] for _, token in items],
            prefix_lens,
            [seq.row for seq, _ in items],
            out_cache_loc,
            device=self.runner.device,
        )
        return self.runner.forward(batch).clone()

    def greedy(self, prompts: list[list[int]], num_steps: int) -> tuple[list[list[int]], list]:
        """Greedy tokens and per-step logits (each (batch, vocab)) for a batch of prompts."""
        seqs = [self.new_seq() for _ in prompts]
        logits = self.extend(list(zip(seqs, prompts, strict=True)))
        steps = [logits]
        tokens = [[t] for t in logits.argmax(-1).tolist()]
        for _ in range(num_steps - 1):
            logits = self.decode([(s, out[-1]) for s, out in zip(seqs, tokens, strict=True)])
            steps.append(logits)
            for out, t in zip(tokens, logits.argmax(-1).tolist(), strict=True):
                out.append(t)
        return tokens, steps
