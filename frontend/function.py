"""`@function`: a Python function whose first parameter `s` is the program state."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from radixlm.chat_templates import get_chat_template
from radixlm.global_config import global_config
from radixlm.program_state import ProgramState
from radixlm.run_program import cache_program, resolve_backend, run_program, run_program_batch
from radixlm.sampling import StopSpec, run_defaults
from radixlm.tracer import TracedProgram, trace_program


class Function:
    def __init__(
        self, func: Callable[..., Any], bind_arguments: dict[str, Any] | None = None
    ) -> None:
        names = list(inspect.signature(func).parameters)
        if not names or names[0] != "s":
            raise ValueError(f'the first parameter of {func.__name__} must be named "s"')
        self.func = func
        self.arg_names = names[1:]
        self.bind_arguments = bind_arguments or {}

    def bind(self, **kwargs: Any) -> Function:
        """A copy with some arguments fixed (they become part of the traced shared prefix)."""
        unknown = set(kwargs) - set(self.arg_names)
        if unknown:
            raise TypeError(f"{self.func.__name__} has no parameters {sorted(unknown)}")
        return Function(self.func, self.bind_arguments | kwargs)

    def run(
        self,
        *args: Any,
        max_new_tokens: int = 128,
        n: int = 1,
        stop: StopSpec | None = None,
        stop_token_ids: list[int] | None = None,
        stop_regex: StopSpec | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = -1,
        min_p: float = 0.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        ignore_eos: bool = False,
        return_logprob: bool | None = None,
        logprob_start_len: int | None = None,
        top_logprobs_num: int | None = None,
        return_text_in_logprobs: bool | None = None,
        stream: bool = False,
        backend: Any = None,
        **kwargs: Any,
    ) -> ProgramState:
        """Runs the program once; sampling arguments are the defaults of every gen in it."""
        defaults = run_defaults(
            max_new_tokens=max_new_tokens,
            n=n,
            stop=stop,
            stop_token_ids=stop_token_ids,
            stop_regex=stop_regex,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
            ignore_eos=ignore_eos,
            return_logprob=return_logprob,
            logprob_start_len=logprob_start_len,
            top_logprobs_num=top_logprobs_num,
            return_text_in_logprobs=return_text_in_logprobs,
        )
        return run_program(self, resolve_backend(backend), args, kwargs, defaults, stream)

    def run_batch(
        self,
        batch_kwargs: list[dict[str, Any]] | list[tuple],
        *,
        max_new_tokens: int = 128,
        n: int = 1,
        stop: StopSpec | None = None,
        stop_token_ids: list[int] | None = None,
        stop_regex: StopSpec | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = -1,
        min_p: float = 0.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        ignore_eos: bool = False,
        return_logprob: bool | None = None,
        logprob_start_len: int | None = None,
        top_logprobs_num: int | None = None,
        return_text_in_logprobs: bool | None = None,
        backend: Any = None,
        num_threads: int | str = "auto",
        progress_bar: bool = False,
    ) -> list[ProgramState]:
        """Runs the program once per item (a dict of arguments, or a tuple of positional ones).

        Returns the finished states in input order. With more than one item, the prefix every
        call shares (found by tracing) is sent once first so the server's radix cache holds it.
        """
        if not batch_kwargs:
            return []
        defaults = run_defaults(
            max_new_tokens=max_new_tokens,
            n=n,
            stop=stop,
            stop_token_ids=stop_token_ids,
            stop_regex=stop_regex,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
            ignore_eos=ignore_eos,
            return_logprob=return_logprob,
            logprob_start_len=logprob_start_len,
            top_logprobs_num=top_logprobs_num,
            return_text_in_logprobs=return_text_in_logprobs,
        )
        arguments = [self._as_kwargs(item) for item in batch_kwargs]
        return run_program_batch(
            self, resolve_backend(backend), arguments, defaults, num_threads, progress_bar
        )

    def _as_kwargs(self, item: dict[str, Any] | tuple | list) -> dict[str, Any]:
        if isinstance(item, dict):
            return item
        if len(item) > len(self.arg_names):
            raise TypeError(
                f"{self.func.__name__} takes {len(self.arg_names)} arguments, got {len(item)}"
            )
        return dict(zip(self.arg_names, item, strict=False))

    def trace(self, *, backend: Any = None, **kwargs: Any) -> TracedProgram:
        """Records the program's IR graph without running a model.

        Arguments not given become placeholders; the chat template is the backend's (the
        default backend's, else "default").
        """
        if backend is None and global_config.default_backend is None:
            chat_template = get_chat_template("default")
        else:
            chat_template = resolve_backend(backend).get_chat_template()
        return trace_program(self.func, self.arg_names, kwargs | self.bind_arguments, chat_template)

    def cache(self, backend: Any = None) -> str:
        """Sends the traced shared prefix to the backend now; returns it."""
        return cache_program(self, resolve_backend(backend))

    def __call__(self, *args: Any, **kwargs: Any) -> ProgramState:
        return self.run(*args, **kwargs)

    def __repr__(self) -> str:
        return f"radixlm.function({self.func.__name__})"


def function(func: Callable[..., Any] | None = None) -> Any:
    """Decorator: `@function` or `@function()`."""
    if func is not None:
        return Function(func)
    return Function
