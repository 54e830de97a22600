"""One frozen ServerArgs, built once from the command line; flags are generated from its fields.

Flag names are SGLang's (`--model-path`, `--port`, `--mem-fraction-static`, ...), so launch
scripts written for SGLang work unchanged for the options both share.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, get_args

SCHEDULE_POLICIES = ("lpm", "fcfs")
ATTENTION_BACKENDS = ("torch", "flashinfer", "triton")
GRAMMAR_BACKENDS = ("outlines", "llguidance", "xgrammar", "none")
LOAD_FORMATS = ("auto", "safetensors", "gguf", "dummy")
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")
QUANTIZATIONS = ("auto", "none", "int4")  # see model_runner.resolve_quantization


@dataclass(frozen=True)
class ServerArgs:
    # Model
    model_path: str | None = field(
        default=None,
        metadata={
            "help": "HF folder, hub id, GGUF file, or config dir (dummy). Default: embedded SmolLM2-135M-Instruct"
        },
    )
    load_format: str = field(default="auto", metadata={"choices": LOAD_FORMATS})
    served_model_name: str | None = None
    dtype: str = field(default="auto", metadata={"choices": DTYPES})
    quantization: str = field(
        default="none",
        metadata={
            "choices": QUANTIZATIONS,
            "help": "none: float weights (exact; outputs do not depend on batching or cache "
            "hits); auto: keep a Q4_1 GGUF's layers in 4 bits on CPU (lossless re-pack, int8 "
            "activation blocks in decode, ~3x faster single stream; passes of many rows on a "
            "dense copy, bfloat16 where the CPU has AMX); int4: quantize any checkpoint (CPU)",
        },
    )
    device: str = field(default="auto", metadata={"choices": DEVICES})
    context_length: int | None = None
    random_seed: int = 0
    # HTTP
    host: str = "127.0.0.1"
    port: int = 30000
    api_key: str | None = None
    # Memory and scheduling
    max_total_tokens: int | None = field(
        default=None, metadata={"help": "KV pool size in tokens (CPU default 65536)"}
    )
    mem_fraction_static: float = field(
        default=0.85, metadata={"help": "GPU memory share for weights + KV pool"}
    )
    max_running_requests: int | None = None
    max_queued_requests: int | None = None
    chunked_prefill_size: int = field(
        default=512, metadata={"help": "max prompt tokens per prefill pass; -1 disables chunking"}
    )
    max_prefill_tokens: int = 4096
    schedule_policy: str = field(default="lpm", metadata={"choices": SCHEDULE_POLICIES})
    disable_radix_cache: bool = False
    enable_mixed_chunk: bool = field(
        default=False,
        metadata={
            "help": "running requests decode inside prefill passes instead of waiting for them "
            "(always on CPU, where a pass costs a read of every weight, unless disabled)"
        },
    )
    disable_mixed_chunk: bool = False
    # Execution
    attention_backend: str | None = field(default=None, metadata={"choices": ATTENTION_BACKENDS})
    num_threads: int | None = field(
        default=None, metadata={"help": "torch CPU threads (default: all cores)"}
    )
    cuda_graph_max_bs: int = 160
    disable_cuda_graph: bool = False
    disable_overlap_schedule: bool = field(
        default=False,
        metadata={"help": "run decode passes serially (CUDA overlaps host work with the GPU)"},
    )
    # Constrained decoding
    # llguidance: best schema coverage with zero invalid instances accepted (docs/constrained.md).
    grammar_backend: str = field(default="llguidance", metadata={"choices": GRAMMAR_BACKENDS})
    grammar_compile_timeout: float = 10.0
    disable_jump_forward: bool = False
    constrained_json_compact: bool = False
    # Output
    stream_interval: int = 1
    incremental_streaming_output: bool = False
    # Operations
    log_level: str = field(
        default="info", metadata={"choices": ("debug", "info", "warning", "error")}
    )
    shutdown_timeout: float = 30.0
    tp_size: int = 1

    def __post_init__(self) -> None:
        _check(self.port > 0 and self.port < 65536, "--port must be in 1..65535")
        _check(0.0 < self.mem_fraction_static < 1.0, "--mem-fraction-static must be in (0, 1)")
        _check(
            self.max_total_tokens is None or self.max_total_tokens >= 64,
            "--max-total-tokens must be >= 64",
        )
        _check(
            self.chunked_prefill_size == -1 or self.chunked_prefill_size >= 16,
            "--chunked-prefill-size must be -1 or >= 16",
        )
        _check(
            self.max_running_requests is None or self.max_running_requests >= 1,
            "--max-running-requests must be >= 1",
        )
        _check(
            self.max_queued_requests is None or self.max_queued_requests >= 1,
            "--max-queued-requests must be >= 1",
        )
        _check(self.grammar_compile_timeout > 0, "--grammar-compile-timeout must be > 0")
        _check(self.stream_interval >= 1, "--stream-interval must be >= 1")
        _check(self.tp_size == 1, "--tp-size > 1 is not supported yet")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @staticmethod
    def add_cli_args(parser: argparse.ArgumentParser) -> None:
        for f in dataclasses.fields(ServerArgs):
            flag = "--" + f.name.replace("_", "-")
            help_text = f.metadata.get("help")
            if f.type in ("bool", bool):
                parser.add_argument(flag, action="store_true", help=help_text)
                continue
            kind = _scalar_type(f.type)
            parser.add_argument(
                flag,
                type=kind,
                default=f.default,
                choices=f.metadata.get("choices"),
                help=help_text,
            )

    @classmethod
    def from_cli_args(cls, args: argparse.Namespace) -> ServerArgs:
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _scalar_type(annotation: Any) -> type:
    text = str(annotation)
    for name, kind in (("int", int), ("float", float), ("str", str)):
        if text.startswith(name):
            return kind
    args = [a for a in get_args(annotation) if a is not type(None)]
    return args[0] if args else str


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def parse_server_args(argv: list[str] | None = None) -> ServerArgs:
    parser = argparse.ArgumentParser(prog="radixlm serve", description="Launch the radixlm server.")
    ServerArgs.add_cli_args(parser)
    args = parser.parse_args(argv)
    try:
        return ServerArgs.from_cli_args(args)
    except ValueError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
