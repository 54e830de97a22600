"""Tracing: run a program's Python against placeholders to get its IR graph without a model.

Arguments become `Argument` nodes and gens become `Variable` nodes, so the trace records what
the program appends and in which order. Two uses: `f.trace()` returns the whole graph, and
`run_batch` traces only up to the first thing that differs between calls (a gen, an argument)
to find the prefix every call shares, which it sends once so the radix cache holds it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from radixlm.chat_template import ChatTemplate
from radixlm.ir import (
    Argument,
    ConstantText,
    Expr,
    ExprList,
    Fork,
    Gen,
    GetForkItem,
    Join,
    RoleBegin,
    RoleEnd,
    Select,
    Variable,
    VarScopeBegin,
    VarScopeEnd,
    as_expr,
)
from radixlm.program_state import ProgramState


class StopTracing(Exception):
    """The program did something a trace cannot follow (or a prefix trace need not)."""


class TraceExecutor:
    """Stands in for `StreamExecutor`: records nodes instead of executing them.

    With `only_prefix`, the first node that is not constant text stops the trace.
    """

    stream = False

    def __init__(self, chat_template: ChatTemplate, only_prefix: bool) -> None:
        self.chat_template = chat_template
        self.only_prefix = only_prefix
        self.nodes: list[Expr] = []
        self.last_node: Expr | None = None
        self.variables: dict[str, Any] = {}
        self.meta_info: dict[str, Any] = {}
        self.messages_: list[dict] = []
        self.cur_role: str | None = None
        self._scope_starts: dict[str, Expr | None] = {}

    def submit(self, expr: Expr | str) -> None:
        self._trace(as_expr(expr))

    def _trace(self, expr: Expr) -> None:
        if isinstance(expr, ExprList):
            for item in expr.exprs:
                self._trace(item)
        elif isinstance(expr, ConstantText):
            self._append(expr)
        elif isinstance(expr, (Gen, Select)):
            self._stop_if_prefix()
            name = expr.name if expr.name is not None else f"_var{len(self.variables)}"
            self.variables[name] = Variable(name, expr)
            self._append(expr)
        elif isinstance(expr, RoleBegin):
            self._role_begin(expr.role)
        elif isinstance(expr, RoleEnd):
            self._role_end(expr.role)
        elif isinstance(expr, VarScopeBegin):
            self._scope_starts[expr.name] = self.last_node
        elif isinstance(expr, VarScopeEnd):
            self._scope_starts.pop(expr.name)
            self.variables[expr.name] = Variable(expr.name, self.last_node)
        else:
            self._stop_if_prefix()
            self._append(expr)

    def _append(self, node: Expr) -> None:
        node.prev_node = self.last_node
        self.nodes.append(node)
        self.last_node = node

    def _stop_if_prefix(self) -> None:
        if self.only_prefix:
            raise StopTracing("the shared prefix ends here")

    def _role_begin(self, role: str) -> None:
        # Mirrors StreamExecutor: roles render to constant text, so they belong to prefixes.
        if self.cur_role is not None:
            raise ValueError(f"roles cannot nest: {role!r} began inside {self.cur_role!r}")
        default_system = self.chat_template.default_system_prompt
        if not self.messages_ and role != "system" and default_system:
            self._role_begin("system")
            self._append(ConstantText(default_system))
            self._role_end("system")
        self._append(
            ConstantText(self.chat_template.get_prefix_and_suffix(role, self.messages_)[0])
        )
        self.cur_role = role

    def _role_end(self, role: str) -> None:
        if self.cur_role != role:
            raise ValueError(f"role {role!r} ended but the open role is {self.cur_role!r}")
        self._append(
            ConstantText(self.chat_template.get_prefix_and_suffix(role, self.messages_)[1])
        )
        # The content is unknown while tracing; only the turn structure matters here.
        self.messages_.append({"role": role, "content": None})
        self.cur_role = None

    # ---- the executor interface ProgramState uses ----

    def get_var(self, name: str) -> Any:
        value = self.variables[name]
        return Variable(value.name, value.source) if isinstance(value, Variable) else value

    def set_var(self, name: str, value: Any) -> None:
        self.variables[name] = value

    def get_meta_info(self, name: str) -> None:
        return None

    def fork(self, size: int) -> list[TraceExecutor]:
        self._stop_if_prefix()
        fork_node = Fork(size)
        self._append(fork_node)
        children = []
        for i in range(size):
            child = TraceExecutor(self.chat_template, self.only_prefix)
            item = GetForkItem(i)
            item.prev_node = fork_node
            child.last_node = item
            child.variables = dict(self.variables)
            child.messages_ = list(self.messages_)
            child.cur_role = self.cur_role
            children.append(child)
        return children

    def join_children(self, states: list[ProgramState], mode: str) -> None:
        children = [state.stream_executor for state in states]
        self._append(Join([child.last_node for child in children], mode))
        if mode == "gather_variable":
            known = set(self.variables)
            for child in children:
                for name, value in child.variables.items():
                    if name not in known:
                        self.variables.setdefault(name, []).append(value)

    def text(self) -> str:
        raise StopTracing("a traced program has no text yet")

    def messages(self) -> list[dict]:
        raise StopTracing("a traced program has no messages yet")

    def sync(self) -> None:
        """Nothing runs while tracing, so there is nothing to wait for."""

    def error(self) -> None:
        return None

    def end(self) -> None:
        """Nothing to stop: a trace has no worker thread."""


class TracedProgram:
    """The result of `f.trace()`: the recorded nodes of the top-level stream."""

    def __init__(self, executor: TraceExecutor, ret_value: Any) -> None:
        self.nodes = executor.nodes
        self.last_node = executor.last_node
        self.variables = executor.variables
        self.ret_value = ret_value

    def print_graph(self) -> str:
        return "" if self.last_node is None else self.last_node.print_graph_dfs()

    def __repr__(self) -> str:
        return f"TracedProgram({len(self.nodes)} nodes)"


def trace_program(
    func: Callable[..., Any],
    arg_names: list[str],
    arguments: dict[str, Any],
    chat_template: ChatTemplate,
) -> TracedProgram:
    """Traces the whole program; arguments not given become placeholders."""
    call_args = {name: Argument(name) for name in arg_names} | arguments
    executor = TraceExecutor(chat_template, only_prefix=False)
    ret_value = func(ProgramState(executor), **call_args)
    return TracedProgram(executor, ret_value)


def extract_prefix_by_tracing(
    func: Callable[..., Any],
    arg_names: list[str],
    bound_arguments: dict[str, Any],
    chat_template: ChatTemplate,
) -> str:
    """The constant text every call of the program starts with (its unbound arguments unknown)."""
    call_args = {name: Argument(name) for name in arg_names} | bound_arguments
    executor = TraceExecutor(chat_template, only_prefix=True)
    try:
        func(ProgramState(executor), **call_args)
    except (StopTracing, TypeError, AttributeError):
        # The prefix ends where the program first needs something unknown. Besides our own
        # StopTracing, code can trip over a placeholder where we cannot intercept it
        # (`json.dumps(arg)`, `arg + 1`); the real run will surface any genuine bug.
        pass
    prefix = ""
    for node in executor.nodes:
        if not isinstance(node, ConstantText):
            break
        prefix += node.value
    return prefix
