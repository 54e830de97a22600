"""Executes one program stream: a worker thread runs the submitted nodes in order.

`s += ...` only queues a node, so the program's Python keeps going while the model works, and
forks (each its own stream) run in parallel. Everything a reader may wait for (variables, the
text, the end of the queue) is guarded by one condition variable. When a node fails, the stream
stops: its queue is dropped and every wait on it, pending or future, raises `ProgramError`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from radixlm.backend.base import BaseBackend, ImageData, Prompt
from radixlm.chat_template import ChatTemplate
from radixlm.ir import (
    CommitLazy,
    ConcatenateAndAppend,
    Expr,
    ExprList,
    Gen,
    Select,
    VarScopeBegin,
    as_expr,
)
from radixlm.node_execution import execute
from radixlm.sampling import SamplingParams

if TYPE_CHECKING:
    from radixlm.program_state import ProgramState

logger = logging.getLogger(__name__)


class ProgramError(RuntimeError):
    """A program stream failed; the original exception is the `__cause__`."""


class StreamExecutor:
    def __init__(
        self,
        backend: BaseBackend,
        defaults: SamplingParams,
        chat_template: ChatTemplate,
        stream: bool,
    ) -> None:
        self.sid = uuid.uuid4().hex
        self.backend = backend
        self.defaults = defaults
        self.chat_template = chat_template
        self.stream = stream
        # Written by the worker (under the condition); read anywhere after a wait.
        self.text_ = ""
        self.messages_: list[dict] = []
        self.variables: dict[str, Any] = {}
        self.meta_info: dict[str, Any] = {}
        self.images_: list[ImageData] = []
        self.cur_role: str | None = None
        self.cur_role_begin_pos = 0
        self.fork_start_text_pos = 0
        # Images of the open role (for its message) and where open var scopes began.
        self.role_images: list[ImageData] = []
        self.scope_starts: dict[str, int] = {}

        self._cond = threading.Condition()
        self._queue: deque[Expr] = deque()
        self._num_unfinished = 0
        self._pending_vars: set[str] = set()
        self._failed_vars: set[str] = set()
        self._error: BaseException | None = None
        self._closed = False
        self._finished = False
        self._worker = threading.Thread(
            target=self._work, name=f"radixlm-stream-{self.sid[:8]}", daemon=True
        )
        self._worker.start()

    # ---- called from the program's thread ----

    def submit(self, expr: Expr | str) -> None:
        expr = as_expr(expr)
        with self._cond:
            self._raise_if_failed()
            if self._closed:
                raise RuntimeError("this program state has ended and takes no more input")
            self._pending_vars.update(_produced_variables(expr))
            self._queue.append(expr)
            self._num_unfinished += 1
            self._cond.notify_all()

    def sync(self) -> None:
        """Waits until every submitted node ran; raises if the stream failed."""
        with self._cond:
            self._cond.wait_for(lambda: self._num_unfinished == 0)
            self._raise_if_failed()

    def error(self) -> BaseException | None:
        with self._cond:
            self._cond.wait_for(lambda: self._num_unfinished == 0)
            return self._error

    def text(self) -> str:
        self.sync()
        return self.text_

    def messages(self) -> list[dict]:
        self.sync()
        return self.messages_

    def get_var(self, name: str) -> Any:
        self._wait_for_var(name)
        if name not in self.variables:
            raise KeyError(f"no variable {name!r}; defined: {sorted(self.variables)}")
        return self.variables[name]

    def set_var(self, name: str, value: Any) -> None:
        with self._cond:
            self.variables[name] = value
            self._cond.notify_all()

    def get_meta_info(self, name: str) -> Any:
        self._wait_for_var(name)
        return self.meta_info.get(name)

    def end(self) -> None:
        """No more input: the worker exits once the queue is empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """Stops the stream with `error` (also used when the program's own code raises)."""
        with self._cond:
            if self._error is not None:
                return
            self._error = error
            self._queue.clear()
            self._num_unfinished = 0
            self._failed_vars = set(self._pending_vars)
            self._pending_vars.clear()
            self._closed = True
            self._cond.notify_all()
        logger.warning("program stream %s failed: %r", self.sid[:8], error)

    def fork(self, size: int) -> list[StreamExecutor]:
        if size < 1:
            raise ValueError(f"fork size must be at least 1, got {size}")
        if size > 1:
            # Prefill the shared text once so that every branch finds it in the prefix cache.
            self.submit(CommitLazy())
        self.sync()
        children = []
        for _ in range(size):
            child = StreamExecutor(self.backend, self.defaults, self.chat_template, self.stream)
            child.text_ = self.text_
            child.messages_ = list(self.messages_)
            child.variables = dict(self.variables)
            child.meta_info = dict(self.meta_info)
            child.images_ = list(self.images_)
            child.cur_role = self.cur_role
            child.cur_role_begin_pos = self.cur_role_begin_pos
            child.fork_start_text_pos = len(self.text_)
            children.append(child)
        return children

    def join_children(self, states: list[ProgramState], mode: str) -> None:
        children = [state.stream_executor for state in states]
        try:
            if mode == "gather_variable":
                for child in children:
                    child.sync()
                with self._cond:
                    # Variables a branch created become lists in the parent, one item per branch.
                    known = set(self.variables)
                    for child in children:
                        for name, value in child.variables.items():
                            if name not in known:
                                self.variables.setdefault(name, []).append(value)
                    self._cond.notify_all()
            elif mode == "concate_and_append":
                self.submit(ConcatenateAndAppend(states))
                self.sync()
            else:
                raise ValueError(f"join mode must be gather_variable or concate_and_append: {mode}")
        finally:
            for child in children:
                child.end()

    def iter_text(self, var_name: str | None = None) -> Iterator[str]:
        """Yields new text as it arrives: of the whole stream, or of one variable."""
        num_yielded = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda n=num_yielded: self._has_news(var_name, n))
                if var_name is not None and var_name in self._failed_vars:
                    self._raise_if_failed()
                current = self.text_ if var_name is None else str(self.variables.get(var_name, ""))
                done = self._is_done(var_name)
            chunk = current[num_yielded:]
            if chunk:
                num_yielded += len(chunk)
                yield chunk
            if done:
                if var_name is None:
                    with self._cond:
                        self._raise_if_failed()
                return

    # ---- internals ----

    def _has_news(self, var_name: str | None, num_yielded: int) -> bool:
        if var_name is None:
            return len(self.text_) > num_yielded or self._finished
        value = self.variables.get(var_name)
        return (value is not None and len(str(value)) > num_yielded) or self._is_done(var_name)

    def _is_done(self, var_name: str | None) -> bool:
        if var_name is None:
            return self._finished
        if var_name in self._pending_vars:
            return False
        # Not pending: finished, failed, or (once the stream ended) never going to exist.
        return var_name in self.variables or var_name in self._failed_vars or self._finished

    def _wait_for_var(self, name: str) -> None:
        with self._cond:
            self._cond.wait_for(lambda: name not in self._pending_vars)
            if name in self._failed_vars:
                self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise ProgramError(f"program stream failed: {self._error!r}") from self._error

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    break
                expr = self._queue.popleft()
            try:
                execute(self, expr)
            except BaseException as exc:  # noqa: BLE001 - handed to every waiter, never dropped
                self.fail(exc)
                break
            with self._cond:
                if self._error is not None:
                    break
                self._num_unfinished -= 1
                self._cond.notify_all()
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    # ---- used by the node handlers (node_execution.py), on the worker thread ----

    def prompt(self) -> Prompt:
        """A snapshot of the stream for a backend call."""
        role_text = self.text_[self.cur_role_begin_pos :] if self.cur_role else ""
        return Prompt(
            self.text_, tuple(self.images_), tuple(self.messages_), self.cur_role, role_text
        )

    def append_text(self, text: str, var_name: str | None = None, meta_info: Any = None) -> None:
        """Appends to the text and, when streaming a gen, to its variable too."""
        with self._cond:
            self.text_ += text
            if var_name is not None:
                self.variables[var_name] += text
                self.meta_info[var_name] = meta_info
            self._cond.notify_all()

    def set_result(self, name: str | None, value: Any, meta_info: Any, done: bool = True) -> None:
        """Sets a variable a node produced; `done` releases whoever waits for it."""
        with self._cond:
            if name is not None:
                self.variables[name] = value
                self.meta_info[name] = meta_info
                if done:
                    self._pending_vars.discard(name)
            self._cond.notify_all()


def _produced_variables(expr: Expr) -> list[str]:
    """Names of the variables a node will set (readers block on them until it runs)."""
    if isinstance(expr, ExprList):
        return [name for item in expr.exprs for name in _produced_variables(item)]
    if isinstance(expr, (Gen, Select)) and expr.name is not None:
        return [expr.name]
    if isinstance(expr, VarScopeBegin):
        return [expr.name]
    return []
