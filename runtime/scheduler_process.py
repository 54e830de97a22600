"""Entry point of the scheduler process: builds the model runner, caches and loop, then serves.

The launcher imports this module to name the process target, so everything that pulls in torch
is imported inside the functions: the HTTP process must stay light.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from typing import TYPE_CHECKING

from radixlm.runtime import ipc
from radixlm.runtime.model_loader import ResolvedModel
from radixlm.runtime.process_utils import die_with_parent, setup_logging
from radixlm.runtime.server_args import ServerArgs
from radixlm.runtime.tokenizer import Tokenizer

if TYPE_CHECKING:
    from radixlm.runtime.grammar_manager import GrammarManager
    from radixlm.runtime.scheduler import Scheduler

logger = logging.getLogger(__name__)

CPU_DEFAULT_MAX_TOTAL_TOKENS = 65536
CPU_DEFAULT_MAX_RUNNING_REQUESTS = 128
GPU_DEFAULT_MAX_RUNNING_REQUESTS = 512


def build_scheduler(args: ServerArgs, resolved: ResolvedModel) -> tuple[Scheduler, dict]:
    import torch

    from radixlm.radix_cache import RadixCache
    from radixlm.runtime.attention.base import default_gpu_attention_backend
    from radixlm.runtime.batch_runner import BatchRunner
    from radixlm.runtime.kv_manager import KVManager
    from radixlm.runtime.model_config import ModelConfig
    from radixlm.runtime.model_runner import ModelRunner
    from radixlm.runtime.output_builder import OutputBuilder
    from radixlm.runtime.scheduler import Scheduler
    from radixlm.runtime.scheduler_config import SchedulerConfig

    device = (
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    if device == "cpu":
        torch.set_num_threads(args.num_threads or len(os.sched_getaffinity(0)))
    dtype = _torch_dtype(args.dtype, device)
    model_config = ModelConfig.from_dir(resolved.model_dir)
    context_len = args.context_length or model_config.context_len
    max_running = args.max_running_requests or (
        CPU_DEFAULT_MAX_RUNNING_REQUESTS if device == "cpu" else GPU_DEFAULT_MAX_RUNNING_REQUESTS
    )
    runner = ModelRunner(
        model_config,
        resolved,
        device=device,
        dtype=dtype,
        attention_backend=args.attention_backend
        or ("torch" if device == "cpu" else default_gpu_attention_backend()),
        cuda_graph_max_bs=None
        if args.disable_cuda_graph or device == "cpu"
        else args.cuda_graph_max_bs,
        max_total_tokens=args.max_total_tokens
        or (CPU_DEFAULT_MAX_TOTAL_TOKENS if device == "cpu" else None),
        mem_fraction_static=args.mem_fraction_static,
        max_running_requests=max_running,
        context_len=context_len,
        seed=args.random_seed,
        quantization=args.quantization,
    )
    tokenizer = Tokenizer(resolved.tokenizer_dir)
    eos_ids = set(model_config.eos_token_ids)
    if tokenizer.eos_token_id is not None:
        eos_ids.add(tokenizer.eos_token_id)
    kv = KVManager(
        runner.token_allocator,
        runner.req_to_token_pool,
        RadixCache(disabled=args.disable_radix_cache),
        cache_enabled=not args.disable_radix_cache,
    )
    config = SchedulerConfig(
        context_len=context_len,
        vocab_size=model_config.vocab_size,
        max_running_requests=min(max_running, runner.req_to_token_pool.max_reqs),
        chunk_size=args.chunked_prefill_size
        if args.chunked_prefill_size > 0
        else args.max_prefill_tokens,
        schedule_policy=args.schedule_policy,
        stream_interval=args.stream_interval,
        enable_jump_forward=not args.disable_jump_forward,
        enable_overlap=device == "cuda" and not args.disable_overlap_schedule,
        # On CPU a decode pass re-reads every weight; riding in a prefill pass costs its rows'
        # attention only (c = 32, random 256 in / 128 out: +3-5 % output tok/s, 3 pairs).
        enable_mixed_chunk=not args.disable_mixed_chunk
        and (args.enable_mixed_chunk or device == "cpu"),
    )
    batch_runner = BatchRunner(
        runner,
        tokenizer,
        sorted(eos_ids),
        context_len,
        model_config.vocab_size,
        enable_jump_forward=config.enable_jump_forward,
    )
    grammars = _grammar_manager(args, tokenizer, model_config.vocab_size, sorted(eos_ids))
    scheduler = Scheduler(config, kv, batch_runner, grammars, OutputBuilder(args.stream_interval))
    info = {
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "quantization": runner.quantization,
        "kv_cache_dtype": str(runner.kv_cache_dtype).removeprefix("torch."),
        "max_total_tokens": runner.token_allocator.size,
        "max_running_requests": config.max_running_requests,
        "enable_mixed_chunk": config.enable_mixed_chunk,
        "context_length": context_len,
        "vocab_size": model_config.vocab_size,
    }
    return scheduler, info


def _torch_dtype(name: str, device: str):
    import torch

    if name == "auto":
        # This CPU class has no fast bf16 matmul; float32 is both faster and exact there.
        return torch.float32 if device == "cpu" else torch.bfloat16
    return getattr(torch, name)


def _grammar_manager(
    args: ServerArgs, tokenizer: Tokenizer, vocab_size: int, eos_ids
) -> GrammarManager:
    from radixlm.runtime.grammar_manager import GrammarManager

    if args.grammar_backend == "none":
        return GrammarManager(None, None)
    from transformers import AutoTokenizer

    from radixlm.constrained import GrammarCompiler, GrammarSpec, create_grammar_backend
    from radixlm.runtime.grammar_vocab import vocab_from_hf_tokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(tokenizer.model_dir)
    vocab = vocab_from_hf_tokenizer(hf_tokenizer, vocab_size=vocab_size, eos_token_ids=eos_ids)
    backend = create_grammar_backend(
        args.grammar_backend, vocab, compact_json=args.constrained_json_compact
    )
    compiler = GrammarCompiler(backend, timeout_s=args.grammar_compile_timeout)
    return GrammarManager(compiler, lambda kind, value: GrammarSpec(kind=kind, value=value))


def run_scheduler(args_json: str, resolved_json: str, endpoints_json: str, ready_conn) -> None:
    """Process target. Arguments arrive as JSON strings; readiness is reported as JSON bytes."""
    die_with_parent()
    args = ServerArgs(**json.loads(args_json))
    setup_logging(args.log_level, "scheduler")
    resolved = ResolvedModel(**json.loads(resolved_json))
    endpoints = ipc.IpcEndpoints(**json.loads(endpoints_json))
    try:
        scheduler, info = build_scheduler(args, resolved)
    except Exception as exc:
        logger.exception("scheduler failed to start")
        ready_conn.send_bytes(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
        return

    import zmq

    from radixlm.runtime.scheduler import run_scheduler_loop

    context = zmq.Context()
    inbox = ipc.scheduler_inbox(context, endpoints)
    outbox = ipc.outbox(context, endpoints.to_detokenizer)
    ready_conn.send_bytes(json.dumps(info).encode())
    logger.info("scheduler ready: %s", info)
    # What start-up built (model, tokenizer and grammar tables) lives as long as the process:
    # moved out of the collected generations, the collections that the passes' short-lived
    # objects trigger never traverse it again.
    gc.freeze()
    run_scheduler_loop(scheduler, inbox, outbox)
