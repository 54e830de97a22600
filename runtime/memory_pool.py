"""Token-granular KV memory: the request→slots table and the per-layer K/V buffers.

Page size is 1 (like SGLang): every token owns one KV slot. Slot 0 is never handed out; it is
a padding target so padded batches (CUDA graphs) can write somewhere harmless.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from radixlm.kernels.cpu_layer_ops import cpu_layer_ops_for


class ReqToTokenPool:
    """``req_to_token[req_slot, pos] -> kv_slot`` for up to ``max_reqs`` live sequences."""

    def __init__(self, max_reqs: int, max_context_len: int, device: torch.device | str) -> None:
        self.max_reqs = max_reqs
        self.max_context_len = max_context_len
        self.req_to_token = torch.zeros(
            (max_reqs, max_context_len), dtype=torch.int64, device=device
        )
        self._free_rows = list(range(max_reqs - 1, -1, -1))

    def available_size(self) -> int:
        return len(self._free_rows)

    def alloc(self) -> int | None:
        return self._free_rows.pop() if self._free_rows else None

    def free(self, row: int) -> None:
        assert 0 <= row < self.max_reqs and row not in self._free_rows
        self._free_rows.append(row)

    def write(self, row: int, start: int, slots: list[int]) -> None:
        if slots:
            self.req_to_token[row, start : start + len(slots)] = torch.tensor(
                slots, dtype=torch.int64, device=self.req_to_token.device
            )

    def write_many(self, rows: list[int], starts: list[int], slots: list[list[int]]) -> None:
        """One indexed write for a whole pass. The (row, column, slot) triples travel as one
        int64 buffer in one copy (from pinned memory on CUDA): a write per request, or a copy
        per index tensor, costs a synchronous transfer each on GPU."""
        lens = np.fromiter(map(len, slots), dtype=np.int64, count=len(slots))
        total = int(lens.sum())
        if not total:
            return
        host = torch.empty((3, total), dtype=torch.int64)
        index = host.numpy()
        index[0] = np.repeat(np.asarray(rows, dtype=np.int64), lens)
        # Column of every slot: its flat index, shifted so each request starts at its start.
        offsets = np.cumsum(lens) - lens
        index[1] = np.arange(total) + np.repeat(np.asarray(starts, dtype=np.int64) - offsets, lens)
        index[2] = [x for s in slots for x in s] if len(slots) > 1 else slots[0]
        device = self.req_to_token.device
        if device.type == "cuda":
            pinned = torch.empty(host.shape, dtype=torch.int64, pin_memory=True)
            pinned.copy_(host)
            host = pinned.to(device, non_blocking=True)
        self.req_to_token[host[0], host[1]] = host[2]

    def read(self, row: int, length: int) -> list[int]:
        return self.req_to_token[row, :length].tolist()


class KVSlotAllocator:
    """Free list of KV slots ``1..size`` (slot 0 is the padding slot)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = list(range(size, 0, -1))

    def available_size(self) -> int:
        return len(self._free)

    def alloc(self, num_slots: int) -> list[int] | None:
        if num_slots > len(self._free):
            return None
        taken = self._free[len(self._free) - num_slots :]
        del self._free[len(self._free) - num_slots :]
        taken.reverse()
        return taken

    def free(self, slots: list[int]) -> None:
        self._free.extend(slots)


def zeros_untouched(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """A zero tensor. On CPU its pages come from calloc (numpy) and are zeroed by the kernel on
    first touch: a KV pool sized for 65,536 tokens then costs resident memory only for the slots
    in use, where ``torch.zeros`` writes (and keeps resident) all of it at start-up."""
    if torch.device(device).type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    num_bytes = math.prod(shape) * dtype.itemsize
    return torch.from_numpy(np.zeros(num_bytes, dtype=np.uint8)).view(dtype).view(shape)


class KVCache:
    """Per-layer K and V buffers indexed by KV slot: ``(size + 1, num_kv_heads, head_dim)``."""

    def __init__(
        self,
        size: int,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        shape = (size + 1, num_kv_heads, head_dim)
        self.size = size
        self.dtype = dtype
        self.k_buffer = [zeros_untouched(shape, dtype, device) for _ in range(num_layers)]
        self.v_buffer = [zeros_untouched(shape, dtype, device) for _ in range(num_layers)]

    def write(self, layer_id: int, loc: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Stores K/V of new tokens. loc: (num_tokens,); k, v: (num_tokens, num_kv_heads, head_dim)."""
        # index_copy_ is one kernel; `buffer[loc] = x` goes through the slower index_put path.
        k_buffer, v_buffer = self.k_buffer[layer_id], self.v_buffer[layer_id]
        ops = cpu_layer_ops_for(k, v)
        if ops is not None and loc.dtype == torch.int64 and loc.is_contiguous():
            ops.store_kv(k_buffer, v_buffer, loc, k, v)  # one call, converting on the way
            return
        k_buffer.index_copy_(0, loc, k.to(k_buffer.dtype))
        v_buffer.index_copy_(0, loc, v.to(v_buffer.dtype))

    @staticmethod
    def bytes_per_token(
        num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype
    ) -> int:
        return 2 * num_layers * num_kv_heads * head_dim * dtype.itemsize
