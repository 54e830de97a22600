"""What a program's `s` is: `ProgramState`, and `ProgramStateGroup` for forks.

Both delegate to an executor: a `StreamExecutor` when running, a `TraceExecutor` when tracing,
so the same program code runs and traces.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from radixlm.ir import Expr, ExprList, RoleBegin, RoleEnd, VarScopeBegin, VarScopeEnd, as_expr


class ProgramState:
    def __init__(self, stream_executor: Any) -> None:
        self.stream_executor = stream_executor
        # What the program function returned (set by `run`).
        self.ret_value: Any = None
        # A state dropped without being joined still lets its worker thread exit.
        weakref.finalize(self, stream_executor.end)

    # ---- appending ----

    def __iadd__(self, other: Expr | str) -> ProgramState:
        if other is None:
            raise ValueError("tried to append None to a program state")
        self.stream_executor.submit(other)
        return self

    def _role(self, role: str, expr: Expr | str | None) -> Any:
        if expr is not None:
            role_expr = ExprList([RoleBegin(role), as_expr(expr), RoleEnd(role)])
            self.stream_executor.submit(role_expr)
            return role_expr
        return self._role_scope(role)

    @contextmanager
    def _role_scope(self, role: str) -> Iterator[None]:
        self.stream_executor.submit(RoleBegin(role))
        yield
        self.stream_executor.submit(RoleEnd(role))

    def system(self, expr: Expr | str | None = None) -> Any:
        """`s.system("...")` appends a system message; `with s.system():` wraps appends."""
        return self._role("system", expr)

    def user(self, expr: Expr | str | None = None) -> Any:
        return self._role("user", expr)

    def assistant(self, expr: Expr | str | None = None) -> Any:
        return self._role("assistant", expr)

    @contextmanager
    def var_scope(self, name: str) -> Iterator[None]:
        """Everything appended inside the block also becomes variable `name`."""
        self.stream_executor.submit(VarScopeBegin(name))
        yield
        self.stream_executor.submit(VarScopeEnd(name))

    # ---- forks ----

    def fork(self, size: int = 1) -> ProgramStateGroup:
        children = self.stream_executor.fork(size)
        return ProgramStateGroup([ProgramState(child) for child in children], self)

    @contextmanager
    def copy(self) -> Iterator[ProgramState]:
        """A single branch, joined (its new variables copied back) when the block ends."""
        group = self.fork(1)
        try:
            yield group[0]
        finally:
            group.join()

    # ---- reading ----

    def text(self) -> str:
        return self.stream_executor.text()

    def messages(self) -> list[dict]:
        return self.stream_executor.messages()

    def sync(self) -> None:
        self.stream_executor.sync()

    def error(self) -> BaseException | None:
        return self.stream_executor.error()

    def get_var(self, name: str) -> Any:
        return self.stream_executor.get_var(name)

    def set_var(self, name: str, value: Any) -> None:
        self.stream_executor.set_var(name, value)

    def get_meta_info(self, name: str) -> Any:
        return self.stream_executor.get_meta_info(name)

    def __getitem__(self, name: str) -> Any:
        return self.get_var(name)

    def __setitem__(self, name: str, value: Any) -> None:
        self.set_var(name, value)

    def __contains__(self, name: str) -> bool:
        return name in self.stream_executor.variables

    def text_iter(self, var_name: str | None = None) -> Iterator[str]:
        """With `run(stream=True)`, yields text deltas as they arrive; else the final text once."""
        if self.stream_executor.stream:
            yield from self.stream_executor.iter_text(var_name)
        else:
            yield self.text() if var_name is None else self.get_var(var_name)

    async def text_async_iter(
        self, var_name: str | None = None, return_meta_data: bool = False
    ) -> AsyncIterator[Any]:
        """`text_iter` for asyncio: each wait runs in the loop's default thread pool."""
        loop = asyncio.get_running_loop()
        chunks = self.text_iter(var_name)
        done = object()
        while True:
            chunk = await loop.run_in_executor(None, next, chunks, done)
            if chunk is done:
                return
            if return_meta_data and var_name is not None:
                yield chunk, self.stream_executor.meta_info.get(var_name)
            else:
                yield chunk

    def __repr__(self) -> str:
        # The text so far, without waiting: a repr must never block (debuggers, tracebacks).
        return f"ProgramState({getattr(self.stream_executor, 'text_', '')!r})"


class ProgramStateGroup:
    """The branches of `s.fork(n)`: index them, append to all, then `join()`."""

    def __init__(self, states: list[ProgramState], src_state: ProgramState) -> None:
        self.states = states
        self.src_state = src_state

    def join(self, mode: str = "gather_variable") -> None:
        """Waits for every branch and brings results back to the parent.

        "gather_variable": each variable a branch created becomes a list in the parent (one item
        per branch, in order). "concate_and_append": the branches' new text is appended to the
        parent in order. Raises if a branch failed.
        """
        self.src_state.stream_executor.join_children(self.states, mode)

    def __getitem__(self, index: int) -> ProgramState:
        return self.states[index]

    def __len__(self) -> int:
        return len(self.states)

    def __iter__(self) -> Iterator[ProgramState]:
        return iter(self.states)

    def __iadd__(
        self, other: Expr | str | list | tuple | Callable[[int], Expr | str]
    ) -> ProgramStateGroup:
        """Appends to every branch: one expr for all, one per branch, or `lambda i: expr`."""
        if isinstance(other, (list, tuple)):
            if len(other) != len(self.states):
                raise ValueError(f"got {len(other)} exprs for {len(self.states)} branches")
            items = list(other)
        elif callable(other):
            items = [other(i) for i in range(len(self.states))]
        else:
            items = [other] * len(self.states)
        for state, item in zip(self.states, items, strict=True):
            state += item
        return self
