"""The attention backend interface and its registry (ABC + registry + lazy import)."""

from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod

import torch

from radixlm.runtime.forward_batch import ForwardBatch
from radixlm.runtime.memory_pool import KVCache, ReqToTokenPool


class AttentionBackend(ABC):
    """Attends each new token over its sequence's cached prefix plus the new tokens (causal).

    ``prepare`` runs once per batch (index tensors, masks, kernel plans); ``forward`` runs once
    per layer and is the only place that touches the KV cache.
    """

    def __init__(self, kv_cache: KVCache, req_to_token_pool: ReqToTokenPool) -> None:
        self.kv_cache = kv_cache
        self.req_to_token_pool = req_to_token_pool

    @abstractmethod
    def prepare(self, batch: ForwardBatch) -> None: ...

    @abstractmethod
    def forward(
        self,
        q: torch.Tensor,  # (num_tokens, num_heads, head_dim)
        k: torch.Tensor,  # (num_tokens, num_kv_heads, head_dim) of the new tokens
        v: torch.Tensor,  # (num_tokens, num_kv_heads, head_dim) of the new tokens
        layer_id: int,
        scaling: float,
    ) -> torch.Tensor:  # (num_tokens, num_heads, head_dim)
        """Writes k/v at the batch's ``out_cache_loc``, then attends."""

    def cpu_kernel_inputs(self) -> tuple[torch.Tensor, ...] | None:
        """For the compiled CPU decoder loop (kernels/cpu_decoder.py), which attends with the
        compiled CPU kernels itself: the prepared batch's ``(out_cache_loc, slots, seq_lens,
        extend_lens, prompt_rows)`` where this backend would use those kernels too, else None."""
        return None

    # CUDA graphs (runtime/cuda_graph_runner.py). A backend that supports them keeps every
    # tensor a captured decode pass reads in buffers it allocates once, here.
    supports_cuda_graph = False

    def init_cuda_graph_state(self, max_batch_size: int, num_heads: int) -> None:
        """Allocates the fixed buffers of decode batches up to ``max_batch_size``."""
        raise NotImplementedError(f"{type(self).__name__} does not support CUDA graphs")

    def prepare_cuda_graph(self, batch: ForwardBatch) -> None:
        """``prepare`` for a padded decode batch made of the graph's static input tensors,
        before its capture and before every replay; writes only into the fixed buffers."""
        raise NotImplementedError(f"{type(self).__name__} does not support CUDA graphs")


# name -> "module:Class", imported only when chosen so CPU installs never import GPU libraries.
ATTENTION_BACKENDS: dict[str, str] = {
    "torch": "radixlm.runtime.attention.torch_backend:TorchAttentionBackend",
    "flashinfer": "radixlm.runtime.attention.flashinfer_backend:FlashInferAttentionBackend",
    "triton": "radixlm.runtime.attention.triton_backend:TritonAttentionBackend",
}


def default_gpu_attention_backend() -> str:
    """FlashInfer where it is installed, else our Triton kernels."""
    return "flashinfer" if importlib.util.find_spec("flashinfer") is not None else "triton"


def get_attention_backend_class(name: str) -> type[AttentionBackend]:
    if name not in ATTENTION_BACKENDS:
        raise ValueError(
            f"unknown attention backend {name!r}; choose from {sorted(ATTENTION_BACKENDS)}"
        )
    module_name, class_name = ATTENTION_BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
