"""Runs the whole server: child processes, the tokenizer manager and the HTTP app under uvicorn.

SIGTERM / Ctrl-C: stop accepting, let in-flight requests finish (up to --shutdown-timeout), then
abort what is left, stop the children and exit 0. A child's death stops the server with exit 1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

import uvicorn

from radixlm.runtime.http_server import create_app, make_grammar_validator
from radixlm.runtime.launcher import ServerProcesses
from radixlm.runtime.metrics import ServerMetrics
from radixlm.runtime.openai_api import register_openai_routes
from radixlm.runtime.process_utils import setup_logging
from radixlm.runtime.server_args import ServerArgs
from radixlm.runtime.tokenizer import Tokenizer
from radixlm.runtime.tokenizer_manager import TokenizerManager

logger = logging.getLogger("radixlm")

DEFAULT_CHAT_MODEL_PATH = "HuggingFaceTB/SmolLM2-135M-Instruct"


def build_model_info(processes: ServerProcesses, tokenizer: Tokenizer) -> dict:
    resolved = processes.resolved
    return {
        "model_path": resolved.display_path,
        "tokenizer_path": resolved.tokenizer_dir,
        "is_generation": True,
        "chat_template": tokenizer.chat_template,
        "preferred_sampling_params": None,
        "weight_version": "default",
        "has_image_understanding": False,
        "max_total_tokens": processes.info.get("max_total_tokens"),
        "context_length": processes.info.get("context_length"),
    }


def served_model_name(args: ServerArgs, processes: ServerProcesses) -> str:
    return args.served_model_name or processes.resolved.display_path


def usable_context_len(processes: ServerProcesses) -> int:
    """A request longer than the KV pool could never be admitted: it would wait forever.
    Capping the context at the pool size turns it into a 400 at the edge instead."""
    return min(processes.info["context_length"], processes.info["max_total_tokens"])


def build_manager(args: ServerArgs, processes: ServerProcesses) -> TokenizerManager:
    tokenizer = Tokenizer(processes.resolved.tokenizer_dir)
    info = processes.info
    max_inflight = None
    if args.max_queued_requests is not None:
        max_inflight = info["max_running_requests"] + args.max_queued_requests
    return TokenizerManager(
        tokenizer,
        processes.endpoints,
        context_len=usable_context_len(processes),
        vocab_size=info["vocab_size"],
        max_inflight_requests=max_inflight,
        validate_grammar=(
            make_grammar_validator(args.grammar_backend, args.constrained_json_compact)
            if args.grammar_backend != "none"
            else None
        ),
        metrics=ServerMetrics(served_model_name(args, processes)),
    )


def serve(args: ServerArgs) -> int:
    setup_logging(args.log_level, "server")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        logger.warning(
            "binding %s without --api-key: anyone who can reach this port can use the server",
            args.host,
        )
    started = time.monotonic()
    processes = ServerProcesses(args)
    processes.start()
    manager = build_manager(args, processes)
    server_info = {**args.to_dict(), **processes.info, "version": _version()}
    server_info.pop("api_key", None)
    app = create_app(
        manager,
        build_model_info(processes, manager.tokenizer),
        server_info,
        api_key=args.api_key,
        incremental_streaming_output=args.incremental_streaming_output,
        extra_routes=lambda app: register_openai_routes(
            app,
            manager,
            served_model_name(args, processes),
            usable_context_len(processes),
            model_aliases=[p for p in (processes.resolved.display_path, args.model_path) if p],
        ),
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=args.shutdown_timeout + 5,
    )
    server = _Server(config)
    exit_code = 0

    def on_child_death(message: str) -> None:
        nonlocal exit_code
        logger.error("%s; shutting down", message)
        exit_code = 1
        server.should_exit = True

    processes.watch(on_child_death)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        server.on_signal = lambda: loop.call_soon_threadsafe(stop_requested.set)
        serve_task = asyncio.create_task(server.serve())
        while not server.started and not serve_task.done():
            await asyncio.sleep(0.05)
        if server.started:
            print(
                f"radixlm ready at {args.url} (model {manager.tokenizer.model_dir}, "
                f"started in {time.monotonic() - started:.1f}s)",
                flush=True,
            )
        stop_task = asyncio.create_task(stop_requested.wait())
        await asyncio.wait({serve_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if stop_requested.is_set():
            await _drain(manager, args.shutdown_timeout)
            server.should_exit = True
        await serve_task

    try:
        asyncio.run(main())
    finally:
        manager.close()
        processes.stop()
    return exit_code


class _Server(uvicorn.Server):
    """uvicorn installs its own SIGTERM/SIGINT handlers; route them to our graceful drain."""

    on_signal = None

    def handle_exit(self, sig, frame) -> None:
        if self.on_signal is None or self.should_exit:
            super().handle_exit(sig, frame)
        else:
            self.on_signal()


async def _drain(manager: TokenizerManager, timeout_s: float) -> None:
    """Graceful stop: refuse new work, wait for in-flight requests, abort the rest."""
    logger.info(
        "shutting down: waiting up to %.0fs for %d requests", timeout_s, manager.num_inflight
    )
    manager.accepting = False
    deadline = time.monotonic() + timeout_s
    while manager.num_inflight and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if manager.num_inflight:
        manager.abort(abort_all=True)
        abort_deadline = time.monotonic() + 5
        while manager.num_inflight and time.monotonic() < abort_deadline:
            await asyncio.sleep(0.05)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("radixlm")
    except PackageNotFoundError:
        return "dev"


def main(argv: list[str] | None = None) -> None:
    from radixlm.runtime.server_args import parse_server_args

    args = parse_server_args(argv if argv is not None else sys.argv[1:])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(serve(args))
