"""Running programs: one call, a batch on a thread pool, and prefix pre-caching."""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from radixlm.backend.base import BaseBackend
from radixlm.global_config import global_config
from radixlm.program_state import ProgramState
from radixlm.sampling import SamplingParams
from radixlm.stream_executor import StreamExecutor
from radixlm.tracer import extract_prefix_by_tracing

if TYPE_CHECKING:
    from radixlm.function import Function

logger = logging.getLogger(__name__)

# A traced prefix shorter than this is not worth a request of its own.
PRECACHE_MIN_CHARS = 64


def resolve_backend(backend: Any) -> BaseBackend:
    """The given backend, else the default one; a launched `Runtime` stands for its endpoint."""
    from radixlm.backend.launched_server import Runtime

    backend = backend if backend is not None else global_config.default_backend
    if backend is None:
        raise ValueError("no backend: pass backend=... or call radixlm.set_default_backend(...)")
    return backend.endpoint if isinstance(backend, Runtime) else backend


def run_program(
    function: Function,
    backend: BaseBackend,
    args: tuple,
    kwargs: dict[str, Any],
    defaults: SamplingParams,
    stream: bool,
) -> ProgramState:
    """Starts the program and returns its state at once (gens run in the background).

    Without `stream`, the program's Python runs here and its exceptions propagate. With
    `stream`, it runs on a thread of its own so the caller can iterate the text meanwhile; an
    exception there fails the state (its iterators and waits raise).
    """
    state = ProgramState(StreamExecutor(backend, defaults, backend.get_chat_template(), stream))
    kwargs = kwargs | function.bind_arguments
    if not stream:
        _call(function, state, args, kwargs)
        return state

    def run_streaming() -> None:
        try:
            _call(function, state, args, kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the state's readers
            state.stream_executor.fail(exc)

    threading.Thread(target=run_streaming, name="radixlm-program", daemon=True).start()
    return state


def _call(function: Function, state: ProgramState, args: tuple, kwargs: dict[str, Any]) -> None:
    try:
        state.ret_value = function.func(state, *args, **kwargs)
    finally:
        state.stream_executor.end()
    if global_config.verbosity >= 2:
        print(state.text())


def run_program_batch(
    function: Function,
    backend: BaseBackend,
    batch_arguments: list[dict[str, Any]],
    defaults: SamplingParams,
    num_threads: int | str,
    progress_bar: bool,
) -> list[ProgramState]:
    """Runs one program per argument dict, `num_threads` at a time; returns finished states.

    A program that fails does not stop the others: its state holds the error (`error()`), and
    reading its text or variables raises it.
    """
    if global_config.enable_precache_with_tracing and len(batch_arguments) > 1:
        cache_program(function, backend)
    if num_threads == "auto":
        num_threads = max(96, (os.cpu_count() or 1) * 16)
    num_threads = max(1, min(int(num_threads), len(batch_arguments)))

    def run_one(arguments: dict[str, Any]) -> ProgramState:
        state = ProgramState(StreamExecutor(backend, defaults, backend.get_chat_template(), False))
        try:
            _call(function, state, (), arguments | function.bind_arguments)
        except Exception as exc:  # noqa: BLE001 - kept on the state, raised when it is read
            state.stream_executor.fail(exc)
        state.error()  # waits for the program's gens to finish
        return state

    bar = None
    if progress_bar:
        import tqdm

        bar = tqdm.tqdm(total=len(batch_arguments))
    with ThreadPoolExecutor(num_threads, thread_name_prefix="radixlm-batch") as pool:
        futures = [pool.submit(run_one, arguments) for arguments in batch_arguments]
        if bar is not None:
            for future in futures:
                future.add_done_callback(lambda _: bar.update())
        states = [future.result() for future in futures]
    if bar is not None:
        bar.close()
    return states


def cache_program(function: Function, backend: BaseBackend) -> str:
    """Sends the program's traced shared prefix once (prefill only); returns that prefix."""
    prefix = extract_prefix_by_tracing(
        function.func, function.arg_names, function.bind_arguments, backend.get_chat_template()
    )
    if len(prefix) > PRECACHE_MIN_CHARS:
        backend.cache_prefix(prefix)
    return prefix
