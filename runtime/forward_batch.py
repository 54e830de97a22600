"""The one batch description the scheduler hands to the model runner for a forward pass."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import torch


class ForwardMode(enum.Enum):
    # EXTEND: each sequence appends >= 1 new tokens after a (possibly empty) cached prefix.
    EXTEND = "extend"
    # DECODE: each sequence appends exactly one token.
    DECODE = "decode"


# Rows of ``ForwardBatch.packed``: the per-sequence inputs of a decode batch, in this order.
PACKED_ROWS = (
    "input_ids",
    "positions",
    "out_cache_loc",
    "req_pool_indices",
    "seq_lens",
    "prefix_lens",
    "extend_lens",
)


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
    # Per sequence, how many of its new tokens (always its first ones) are prompt tokens (the
    # request's input, as opposed to generated tokens, even when recomputed): CPU attention
    # gives them to its prompt kernel. None: not known, no new token counts as one.
    prompt_rows_cpu: tuple[int, ...] | None = None
    # Decode batches from build_forward_batch: (len(PACKED_ROWS), batch), the tensors above as
    # rows of one device tensor, so the CUDA-graph runner fills its inputs with one copy.
    packed: torch.Tensor | None = None
    # True when logits_indices is arange(batch) (decode, one row per sequence): lets the
    # CUDA-graph runner keep its identity index buffer instead of copying.
    logits_are_rows: bool = False

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
    prompt_lens: list[int] | None = None,
) -> ForwardBatch:
    """Builds a ForwardBatch from per-sequence new tokens and prefix lengths.

    ``out_cache_loc`` lists the KV slots of all new tokens, sequence after sequence; the
    caller has already written them into ``req_to_token`` at positions
    ``[prefix_len, prefix_len + extend_len)`` of each sequence's row. ``prompt_lens``: each
    sequence's prompt length (its request's input tokens), where known.

    Every tensor is a slice of one int64 buffer, filled on the host with numpy and sent to the
    device in one copy (from pinned memory, non-blocking, on CUDA): a step's inputs cost one
    transfer, not one synchronous transfer per tensor.
    """
    extend = np.fromiter(map(len, input_ids), dtype=np.int64, count=len(input_ids))
    assert extend.size and int(extend.min()) >= 1, "every sequence brings at least one new token"
    batch = extend.size
    num_tokens = int(extend.sum())
    is_decode = num_tokens == batch
    if mode is ForwardMode.DECODE:
        assert is_decode, "decode takes exactly one token per sequence"
    prefix = np.asarray(prefix_lens, dtype=np.int64)
    seq = prefix + extend
    assert len(out_cache_loc) == num_tokens
    num_logits = batch if logits_indices is None else len(logits_indices)
    # Layout: input_ids, positions, out_cache_loc (num_tokens each), then req_pool_indices,
    # seq_lens, prefix_lens, extend_lens (batch each), then logits_indices. In a decode batch
    # num_tokens == batch, so the first seven segments are the rows of ``packed``.
    t, b = num_tokens, batch
    host = torch.empty(3 * t + 4 * b + num_logits, dtype=torch.int64)
    flat = host.numpy()
    if is_decode:
        flat[:t] = [ids[0] for ids in input_ids]
        flat[t : 2 * t] = prefix
    else:
        flat[:t] = [x for ids in input_ids for x in ids]
        # Position of every new token: its index in the flat batch, shifted per sequence so
        # that each sequence starts at its prefix length.
        starts = np.cumsum(extend) - extend
        flat[t : 2 * t] = np.arange(t) + np.repeat(prefix - starts, extend)
    flat[2 * t : 3 * t] = out_cache_loc
    o = 3 * t
    flat[o : o + b] = req_pool_indices
    flat[o + b : o + 2 * b] = seq
    flat[o + 2 * b : o + 3 * b] = prefix
    flat[o + 3 * b : o + 4 * b] = extend
    if logits_indices is None:
        flat[o + 4 * b :] = np.cumsum(extend) - 1  # the last new token of each sequence
    else:
        flat[o + 4 * b :] = logits_indices
    logits_are_rows = is_decode and (
        logits_indices is None or bool(np.array_equal(flat[o + 4 * b :], np.arange(b)))
    )
    device = torch.device(device)
    if device.type == "cuda":
        # The caching host allocator keeps a pinned block busy until this copy has completed.
        pinned = torch.empty(host.shape, dtype=torch.int64, pin_memory=True)
        pinned.copy_(host)
        dev = pinned.to(device, non_blocking=True)
    else:
        dev = host.to(device)
    seq_lens_cpu = tuple(seq.tolist())
    return ForwardBatch(
        mode=mode,
        input_ids=dev[:t],
        positions=dev[t : 2 * t],
        out_cache_loc=dev[2 * t : o],
        req_pool_indices=dev[o : o + b],
        seq_lens=dev[o + b : o + 2 * b],
        prefix_lens=dev[o + 2 * b : o + 3 * b],
        extend_lens=dev[o + 3 * b : o + 4 * b],
        logits_indices=dev[o + 4 * b :],
        seq_lens_cpu=seq_lens_cpu,
        prefix_lens_cpu=tuple(prefix.tolist()),
        extend_lens_cpu=tuple(extend.tolist()),
        prompt_rows_cpu=None
        if prompt_lens is None
        else tuple(np.clip(np.asarray(prompt_lens) - prefix, 0, extend).tolist()),
        packed=dev[: 7 * b].view(7, b) if is_decode else None,
        logits_are_rows=logits_are_rows,
    )
