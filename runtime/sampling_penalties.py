"""Per-request logit edits before sampling: logit_bias, and the repetition / frequency /
presence penalties over a request's history, applied to a batch's logits in place with one
gather and one scatter, from token counts kept incrementally."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from radixlm.runtime.sampler import SamplingRequestState


class PenaltyTokens:
    """The distinct tokens one request's penalties apply to, with their output counts.

    Holds the distinct prompt tokens (only when repetition_penalty is on) and the distinct output
    tokens as CPU tensors grown in place, so a decode step costs O(new tokens), not O(history).
    ``sync`` follows ``output_ids``: appends are counted incrementally; a shrunk list or a changed
    last counted token (a rewrite) triggers a recount.
    """

    def __init__(self, prompt_ids: Sequence[int]) -> None:
        self._prompt = list(dict.fromkeys(prompt_ids))  # distinct, in first-seen order
        self._reset()

    def _reset(self) -> None:
        self._position = {token: i for i, token in enumerate(self._prompt)}
        self._size = len(self._prompt)
        capacity = max(16, 2 * self._size)
        self._ids = torch.zeros(capacity, dtype=torch.long)
        self._ids[: self._size] = long_tensor(self._prompt, "cpu")
        self._counts = torch.zeros(capacity)
        self._counted_len = 0
        self._counted_last = -1

    def sync(self, output_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, counts): distinct tokens (int64) and their occurrences in ``output_ids``
        (float32, 0 for prompt-only tokens). Views of internal buffers: read, don't keep."""
        counted = self._counted_len
        if counted > len(output_ids) or (counted and output_ids[counted - 1] != self._counted_last):
            self._reset()
            counted = 0
        new = output_ids[counted:]
        if new:
            fresh = [t for t in dict.fromkeys(new) if t not in self._position]
            if fresh:
                self._grow(self._size + len(fresh))
                for token in fresh:
                    self._position[token] = self._size
                    self._size += 1
                self._ids[self._size - len(fresh) : self._size] = long_tensor(fresh, "cpu")
            positions = long_tensor([self._position[t] for t in new], "cpu")
            self._counts.index_put_((positions,), torch.ones(len(new)), accumulate=True)
            self._counted_len = len(output_ids)
            self._counted_last = output_ids[-1]
        return self._ids[: self._size], self._counts[: self._size]

    def _grow(self, needed: int) -> None:
        if needed <= len(self._ids):
            return
        capacity = max(needed, 2 * len(self._ids))
        ids = torch.zeros(capacity, dtype=torch.long)
        counts = torch.zeros(capacity)
        ids[: self._size] = self._ids[: self._size]
        counts[: self._size] = self._counts[: self._size]
        self._ids, self._counts = ids, counts


def apply_logit_bias(x: torch.Tensor, states: Sequence[SamplingRequestState]) -> None:
    vocab = x.shape[1]
    rows: list[int] = []
    tokens: list[int] = []
    biases: list[float] = []
    for i, state in enumerate(states):
        for token, bias in state.params.logit_bias.items():
            # Ids past the model's vocabulary cannot be sampled anyway; the HTTP edge accepts
            # any integer, so they are dropped here rather than crash the whole batch.
            if 0 <= token < vocab:
                rows.append(i)
                tokens.append(token)
                biases.append(bias)
    if rows:
        index = (long_tensor(rows, x.device), long_tensor(tokens, x.device))
        x.index_put_(index, float_tensor(biases, x.device), accumulate=True)


def apply_penalties(x: torch.Tensor, states: Sequence[SamplingRequestState]) -> None:
    """Repetition penalty, then frequency/presence, with one gather and one scatter for the batch.

    Each penalised row contributes its distinct penalty tokens; ``local`` maps every entry back
    to its row in the list of penalised rows.
    """
    rows = [i for i, s in enumerate(states) if s.penalty_tokens is not None]
    if not rows:
        return
    params = [states[i].params for i in rows]
    synced = []
    for i in rows:
        tracker = states[i].penalty_tokens
        assert tracker is not None
        synced.append(tracker.sync(states[i].output_ids))
    sizes = long_tensor([len(ids) for ids, _ in synced], "cpu")
    local = torch.repeat_interleave(torch.arange(len(rows)), sizes)  # (num_entries,)
    device = x.device
    index = (
        long_tensor(rows, "cpu")[local].to(device),
        torch.cat([ids for ids, _ in synced]).to(device),
    )
    counts = torch.cat([c for _, c in synced]).to(device)
    local = local.to(device)
    values = x[index]
    if any(p.repetition_penalty != 1.0 for p in params):
        # HF semantics: shrink positive logits, push negative ones further down.
        factor = float_tensor([p.repetition_penalty for p in params], device)[local]
        values = torch.where(values > 0, values / factor, values * factor)
    if any(p.frequency_penalty != 0.0 or p.presence_penalty != 0.0 for p in params):
        # OpenAI: logit -= frequency_penalty * count + presence_penalty * (count > 0)
        frequency = float_tensor([p.frequency_penalty for p in params], device)[local]
        presence = float_tensor([p.presence_penalty for p in params], device)[local]
        values = values - (counts * frequency + (counts > 0) * presence)
    # Tokens are distinct within a row, so the scatter has no duplicate indices.
    x[index] = values


def long_tensor(values: list[int], device: torch.device | str) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)


def float_tensor(values: list[float], device: torch.device | str) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device)
