"""Owns the model, its weights, the paged KV memory and the attention backend; runs one
forward pass per scheduler batch and returns logits."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator

import torch

from radixlm.kernels.cpu_amx_attention import load_cpu_amx_attention
from radixlm.kernels.cpu_amx_matmul import load_cpu_amx_matmul
from radixlm.kernels.cpu_bf16_matmul import load_cpu_bf16_matmul
from radixlm.kernels.cpu_decoder import load_cpu_decoder
from radixlm.kernels.cpu_dense_matmul import load_cpu_dense_matmul
from radixlm.kernels.cpu_layer_ops import load_cpu_layer_ops
from radixlm.kernels.cpu_paged_attention import load_cpu_paged_attention
from radixlm.kernels.cpu_quant_matmul import load_cpu_quant_matmul
from radixlm.runtime.attention.base import get_attention_backend_class
from radixlm.runtime.cuda_graph_runner import CudaGraphRunner
from radixlm.runtime.forward_batch import ForwardBatch
from radixlm.runtime.layers.dense_cpu import dense_cpu_supported, native_bf16_matmul
from radixlm.runtime.layers.embedding import LMHead
from radixlm.runtime.layers.linear import LinearBase
from radixlm.runtime.layers.quantized_cpu import quantized_cpu_supported
from radixlm.runtime.memory_pool import KVCache, KVSlotAllocator, ReqToTokenPool
from radixlm.runtime.model_config import ModelConfig
from radixlm.runtime.model_loader.resolve import ResolvedModel
from radixlm.runtime.model_loader.weights import init_dummy_weights, iter_safetensors
from radixlm.runtime.models.cpu_decoder import build_cpu_decoder
from radixlm.runtime.models.registry import get_model_class
from radixlm.runtime.server_args import QUANTIZATIONS


def default_dtype_for(device: torch.device) -> torch.dtype:
    # This project's CPUs have no fast bf16 matmul (no AMX / avx512_bf16): float32 there.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


# GGUF types that Q4_1 blocks hold exactly (see layers/quantized_cpu.py).
_LOSSLESS_INT4_SOURCES = {"Q4_1"}


def resolve_quantization(
    requested: str, device: torch.device, dtype: torch.dtype, resolved: ResolvedModel
) -> str:
    """The quantization to run: "none" keeps float weights; "auto" keeps a Q4_1 GGUF's layers
    in 4 bits on CPU (llama.cpp's choice too: a decode step is a weight stream) and runs
    everything else in float; "int4" quantizes any checkpoint."""
    if requested not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {requested!r}; choose from {QUANTIZATIONS}")
    # The int4 kernel takes float32 activations; its layers keep a packed dense copy for big
    # passes (layers/quantized_cpu.py).
    int4_runs_here = dtype == torch.float32 and dense_cpu_supported(device, dtype)
    if requested == "int4" and not int4_runs_here:
        raise ValueError("--quantization int4 runs on CPU with --dtype float32 only")
    if requested != "auto":
        return requested
    types = set(resolved.source_weight_types)
    lossless = bool(types) and types <= _LOSSLESS_INT4_SOURCES
    return "int4" if int4_runs_here and lossless else "none"


def max_total_tokens_for_gpu(
    model_config: ModelConfig, dtype: torch.dtype, device: torch.device, mem_fraction_static: float
) -> int:
    """KV slots that fit once the weights are loaded, with SGLang's meaning of the fraction:
    weights + KV cache together use ``mem_fraction_static`` of the GPU's total memory."""
    free, total = torch.cuda.mem_get_info(device)
    kv_bytes = free - total * (1.0 - mem_fraction_static)
    per_token = KVCache.bytes_per_token(
        model_config.num_layers, model_config.num_kv_heads, model_config.head_dim, dtype
    )
    num_tokens = int(kv_bytes // per_token)
    if num_tokens <= 0:
        raise RuntimeError(
            f"no GPU memory left for the KV cache ({free / 2**30:.1f} GiB free of "
            f"{total / 2**30:.1f} GiB); raise --mem-fraction-static"
        )
    return num_tokens


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _start_cpu_kernel_builds(dtype: torch.dtype, quantization: str) -> list[threading.Thread]:
    """Builds (or loads from the cache) the CPU kernels this runner will use, each in its own
    thread while the weights load: a first-ever start otherwise compiled them one after another
    (~35 s each on a 2-core machine). Whoever needs a kernel waits for its build."""
    loaders: list[Callable[[], object]] = [load_cpu_paged_attention]
    if dtype in (torch.float32, torch.bfloat16):
        loaders.append(load_cpu_layer_ops)
    if dtype == torch.float32:
        loaders += [load_cpu_dense_matmul, load_cpu_decoder]
    if quantization == "int4" and not native_bf16_matmul():
        loaders += [load_cpu_quant_matmul, load_cpu_bf16_matmul]
    if native_bf16_matmul() and (dtype == torch.bfloat16 or quantization == "int4"):
        loaders.append(load_cpu_amx_matmul)
    if native_bf16_matmul() and quantization == "int4":  # bfloat16 K/V: prompt rows on tiles
        loaders.append(load_cpu_amx_attention)
    threads = [threading.Thread(target=load, name=load.__name__) for load in loaders]
    for thread in threads:
        thread.start()
    return threads


class ModelRunner:
    def __init__(
        self,
        model_config: ModelConfig,
        resolved: ResolvedModel,
        *,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        attention_backend: str = "torch",
        max_total_tokens: int | None,
        max_running_requests: int,
        context_len: int,
        seed: int = 0,
        mem_fraction_static: float = 0.88,
        cuda_graph_max_bs: int | None = None,
        quantization: str = "none",
    ) -> None:
        """``dtype=None`` picks float32 on CPU, bfloat16 on CUDA. ``max_total_tokens=None`` sizes
        the KV pool from ``mem_fraction_static`` (CUDA only; CPU callers must pass it).
        ``cuda_graph_max_bs`` captures decode graphs up to that batch size (CUDA and a backend
        that supports them only); ``None`` runs every pass eagerly. ``quantization`` is one of
        QUANTIZATIONS (see ``resolve_quantization``)."""
        self.model_config = model_config
        self.device = torch.device(device)
        self.dtype = dtype or default_dtype_for(self.device)
        self.quantization = resolve_quantization(quantization, self.device, self.dtype, resolved)
        self.context_len = context_len
        kernel_builds: list[threading.Thread] = []
        if self.device.type == "cpu":
            # One intra-op thread per core we may run on; more only oversubscribes.
            torch.set_num_threads(min(torch.get_num_threads(), len(os.sched_getaffinity(0))))
            kernel_builds = _start_cpu_kernel_builds(self.dtype, self.quantization)

        model_class = get_model_class(model_config.architecture)
        with torch.device(self.device), _default_dtype(self.dtype):
            self.model = model_class(model_config, max_positions=context_len)
        with torch.inference_mode():
            if resolved.weights_format == "dummy":
                init_dummy_weights(self.model, seed)
            else:
                self.model.load_weights(iter_safetensors(resolved.model_dir))
        self.model.eval()
        self._pack_cpu_weights()

        if max_total_tokens is None:
            if self.device.type != "cuda":
                raise ValueError("max_total_tokens must be given on CPU")
            max_total_tokens = max_total_tokens_for_gpu(
                model_config, self.dtype, self.device, mem_fraction_static
            )
        self.max_total_tokens = max_total_tokens
        self.req_to_token_pool = ReqToTokenPool(max_running_requests, context_len, self.device)
        self.token_allocator = KVSlotAllocator(max_total_tokens)
        # int4 mode already trades exactness for speed; bfloat16 K/V halve the bytes a CPU
        # decode step attends over (its other big memory stream).
        self.kv_cache_dtype = torch.bfloat16 if self.quantization == "int4" else self.dtype
        self.kv_cache = KVCache(
            max_total_tokens,
            model_config.num_layers,
            model_config.num_kv_heads,
            model_config.head_dim,
            self.kv_cache_dtype,
            self.device,
        )
        self.attn_backend = get_attention_backend_class(attention_backend)(
            self.kv_cache, self.req_to_token_pool
        )
        # Every kernel is ready before the server is (the first request must not wait for a
        # build), and before the compiled layer loop, which calls them.
        for thread in kernel_builds:
            thread.join()
        if self.device.type == "cpu":
            self.model.model.cpu_decoder = build_cpu_decoder(self.model.model, self.kv_cache)
        self.cuda_graph_runner: CudaGraphRunner | None = None
        if (
            cuda_graph_max_bs
            and self.device.type == "cuda"
            and self.attn_backend.supports_cuda_graph
        ):
            self.cuda_graph_runner = CudaGraphRunner(
                self.model,
                self.attn_backend,
                model_config.num_heads,
                min(cuda_graph_max_bs, max_running_requests),
                self.device,
            )

    def _pack_cpu_weights(self) -> None:
        prepack = dense_cpu_supported(self.device, self.dtype)
        for module in self.model.modules():
            if not isinstance(module, LinearBase):
                continue
            # The LM head gets 8 bits: it is the tied embedding, Q8_0 in the default GGUF.
            if self.quantization == "int4" and quantized_cpu_supported(
                self.device, module.weight.shape[1]
            ):
                module.quantize_for_cpu("q8_0" if isinstance(module, LMHead) else "q4_1")
            elif prepack:
                module.prepack_for_cpu()

    @torch.inference_mode()
    def forward(self, batch: ForwardBatch) -> torch.Tensor:
        """Float32 logits (num_logits, vocab_size) for ``batch.logits_indices``, in that order.

        Writes the new tokens' K/V at ``batch.out_cache_loc`` as a side effect. Decode passes
        that fit a captured CUDA graph return a view of its output buffer, valid until the
        next pass.
        """
        if self.cuda_graph_runner is not None and self.cuda_graph_runner.can_run(batch):
            return self.cuda_graph_runner.replay(batch)
        self.attn_backend.prepare(batch)
        hidden_states = self.model(batch.input_ids, batch.positions, batch, self.attn_backend)
        # Only the wanted rows go through the LM head (vocab-sized matmul).
        return self.model.compute_logits(hidden_states.index_select(0, batch.logits_indices))
