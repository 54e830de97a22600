"""The one batch description the scheduler hands to the model runner for a forward pass."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch


class ForwardMode(enum.Enum):
    # EXTEND: each sequence appends >= 1 new tokens after a (possibly empty) cached prefix.
    EXTEND = "extend"
    # DECODE: each sequence appends exactly one token.
    DECODE = "decode"


@dataclass(frozen=True)
class ForwardBatch:
    """Flattened, ragged batch. Names follow FlashInfer / SGLang conventions.

    All tensors are int64 on the runner's device. Sequence i owns the token range
    ``[cu_extend_lens[i], cu_extend_lens[i + 1])`` of the flattened token dimension.
    """

    mode: ForwardMode
    input_ids: torch.Tensor  # (num_tokens,) the new tokens of every sequence, concatenated
    positions: torch.Tensor  # (num_tokens,) absolute position of each new token
    out_cache_loc: torch.Tensor  # (num_tokens,) KV slot where each new token's K/V is written
    req_pool_indices: torch.Tensor  # (batch,) row of req_to_token holding each sequence's slots
    seq_lens: torch.Tensor  # (batch,) total length after this pass (prefix + new tokens)
    prefix_lens: torch.Tensor  # (batch,) tokens already in the KV pool before this pass
    extend_lens: torch.Tensor  # (batch,) new tokens per sequence (all 1 in DECODE)
    # Rows of the flattened token dimension whose logits the caller wants, in output order.
    # By default the last new token of each sequence; more rows are asked for input logprobs.
    logits_indices: torch.Tensor  # (num_logits,)
    # Python copies of the lengths, so backends never sync the device to read them.
    seq_lens_cpu: tuple[int, ...]
    prefix_lens_cpu: tuple[int, ...]
    extend_lens_cpu: tuple[int, ...]

    @property
    def batch_size(self) -> int:
        return len(self.seq_lens_cpu)

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])


def build_forward_batch(
    mode: ForwardMode,
    input_ids: list[list[int]],
    prefix_lens: list[int],
    req_pool_indices: list[int],
    out_cache_loc: list[int],
    logits_indices: list[int] | None = None,
    device: torch.device | str = "cpu",
) -> ForwardBatch:
    """Builds a ForwardBatch from per-sequence new tokens and prefix lengths.

    ``out_cache_loc`` lists the KV slots of all new tokens, sequence after sequence; the
    caller has already written them into ``req_to_token`` at positions
    ``[prefix_len, prefix_len + extend_len)`` of each sequence's row.
    """
    extend_lens = [len(ids) for ids in input_ids]
    assert all(n >= 1 for n in extend_lens), "every sequence must bring at least one new token"
    if mode is ForwardMode.DECODE:
        assert all(n == 1 for n in extend_lens), "decode takes exactly one token per sequence"
    seq_lens = [p + n for p, n in zip(prefix_lens, extend_lens, strict=True)]
    flat_ids = [t for ids in input_ids for t in ids]
    positions = [
        pos for p, n in zip(prefix_lens, extend_lens, strict=True) for pos in range(p, p + n)
    ]
    assert len(out_cache_loc) == len(flat_ids)
    if logits_indices is None:
        ends, total = [], 0
        for n in extend_lens:
            total += n
            ends.append(total - 1)
        logits_indices = ends

    def as_tensor(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int64, device=device)

    return ForwardBatch(
        mode=mode,
        input_ids=as_tensor(flat_ids),
        positions=as_tensor(positions),
        out_cache_loc=as_tensor(out_cache_loc),
        req_pool_indices=as_tensor(req_pool_indices),
        seq_lens=as_tensor(seq_lens),
        prefix_lens=as_tensor(prefix_lens),
        extend_lens=as_tensor(extend_lens),
        logits_indices=as_tensor(logits_indices),
        seq_lens_cpu=tuple(seq_lens),
        prefix_lens_cpu=tuple(prefix_lens),
        extend_lens_cpu=tuple(extend_lens),
    )
