"""The intermediate representation of a program: the nodes that `s += ...` appends.

A program is plain Python that appends expressions to a state. Running it, the interpreter
executes each node as it arrives; tracing it, the tracer records the nodes into a graph without
calling a model. `a + b` between expressions (or strings) builds an `ExprList`, so
`s += "Q: " + question + gen("a")` is one submission.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from radixlm.sampling import SamplingOverrides

if TYPE_CHECKING:
    from radixlm.choices import ChoicesSamplingMethod
    from radixlm.program_state import ProgramState

_node_ids = itertools.count()


class Expr:
    """Base of every node; `node_id` orders nodes in printed graphs."""

    def __init__(self) -> None:
        self.node_id = next(_node_ids)
        # Set by the tracer: the node this one was appended after (None at a stream's start).
        self.prev_node: Expr | None = None

    def __add__(self, other: Expr | str) -> ExprList:
        return concatenate(self, as_expr(other))

    def __radd__(self, other: Expr | str) -> ExprList:
        return concatenate(as_expr(other), self)

    def print_graph_dfs(self) -> str:
        """One line per node reachable backwards from this one, dependencies first."""
        lines: list[str] = []
        seen: set[int] = set()

        def visit(node: Expr | None) -> None:
            if node is None or node.node_id in seen:
                return
            seen.add(node.node_id)
            visit(node.prev_node)
            for child in node.dependencies():
                visit(child)
            if isinstance(node, (Fork, GetForkItem)) or node.prev_node is None:
                lines.append(f"%{node.node_id} = {node!r}")
            else:
                lines.append(f"%{node.node_id} = %{node.prev_node.node_id} + {node!r}")

        visit(self)
        return "\n".join(lines) + "\n"

    def dependencies(self) -> Sequence[Expr]:
        """Nodes this one reads besides `prev_node` (list items, a variable's source)."""
        return ()


def as_expr(value: Expr | str) -> Expr:
    if isinstance(value, str):
        return ConstantText(value)
    if not isinstance(value, Expr):
        raise TypeError(
            f"can only append str or radixlm expressions to a program, got {type(value).__name__}"
        )
    return value


def concatenate(a: Expr, b: Expr) -> ExprList:
    left = a.exprs if isinstance(a, ExprList) else [a]
    right = b.exprs if isinstance(b, ExprList) else [b]
    return ExprList(left + right)


class ExprList(Expr):
    def __init__(self, exprs: list[Expr]) -> None:
        super().__init__()
        self.exprs = exprs

    def dependencies(self) -> Sequence[Expr]:
        return self.exprs

    def __repr__(self) -> str:
        return f"ExprList({self.exprs!r})"


class ConstantText(Expr):
    def __init__(self, value: str) -> None:
        super().__init__()
        self.value = value

    def __repr__(self) -> str:
        return f"Constant({self.value!r})"


class Gen(Expr):
    """Generate text into variable `name` (None: appended to the text only)."""

    def __init__(self, name: str | None, overrides: SamplingOverrides) -> None:
        super().__init__()
        self.name = name
        self.overrides = overrides

    def __repr__(self) -> str:
        return f"Gen({self.name!r})"


class Select(Expr):
    """Pick one of `choices` by scoring each continuation's logprobs."""

    def __init__(
        self,
        name: str | None,
        choices: list[str],
        temperature: float,
        choices_method: ChoicesSamplingMethod,
    ) -> None:
        super().__init__()
        self.name = name
        self.choices = choices
        self.temperature = temperature
        self.choices_method = choices_method

    def __repr__(self) -> str:
        return f"Select({self.name!r}, choices={self.choices!r})"


class Image(Expr):
    """An image (a file path or raw bytes); the chat template's image token marks its place."""

    def __init__(self, source: str | bytes) -> None:
        super().__init__()
        self.source = source

    def __repr__(self) -> str:
        label = self.source if isinstance(self.source, str) else f"<{len(self.source)} bytes>"
        return f"Image({label!r})"


class RoleBegin(Expr):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def __repr__(self) -> str:
        return f"RoleBegin({self.role!r})"


class RoleEnd(Expr):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def __repr__(self) -> str:
        return f"RoleEnd({self.role!r})"


class VarScopeBegin(Expr):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def __repr__(self) -> str:
        return f"VarScopeBegin({self.name!r})"


class VarScopeEnd(Expr):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def __repr__(self) -> str:
        return f"VarScopeEnd({self.name!r})"


class CommitLazy(Expr):
    """Send the text so far to the backend (prefill only) so that forks find it cached."""

    def __repr__(self) -> str:
        return "CommitLazy()"


class ConcatenateAndAppend(Expr):
    """Append the text each fork added since the fork point (join mode "concate_and_append")."""

    def __init__(self, states: list[ProgramState]) -> None:
        super().__init__()
        self.states = states

    def __repr__(self) -> str:
        return f"ConcatenateAndAppend({len(self.states)} states)"


# ---- nodes that only appear in traces ----


class Argument(Expr):
    """A program argument whose value is unknown while tracing.

    Using it as a Python value (f-string, `str()`, `len()`, truth test, attribute, index) cannot
    be traced: those raise `StopTracing`, which ends a prefix trace at that point.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def __repr__(self) -> str:
        return f"Argument({self.name!r})"

    def _unknown(self, *_: Any) -> Any:
        from radixlm.tracer import StopTracing

        raise StopTracing(
            f"argument {self.name!r} is used as a Python value; tracing cannot know it "
            f"(pass it to trace({self.name}=...) or only append it with `s +=`)"
        )

    __format__ = _unknown
    __str__ = _unknown
    __bool__ = _unknown
    __len__ = _unknown
    __iter__ = _unknown
    __getitem__ = _unknown
    __int__ = _unknown
    __float__ = _unknown

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return self._unknown()


class Variable(Expr):
    """A reference to a variable produced by `source` (a gen, select or var scope)."""

    def __init__(self, name: str, source: Expr | None) -> None:
        super().__init__()
        self.name = name
        self.source = source

    def dependencies(self) -> Sequence[Expr]:
        return () if self.source is None else (self.source,)

    def __repr__(self) -> str:
        return f"Variable({self.name!r})"


class Fork(Expr):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __repr__(self) -> str:
        return f"Fork(%{_node_id(self.prev_node)}, size={self.size})"


class GetForkItem(Expr):
    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def __repr__(self) -> str:
        return f"GetForkItem(%{_node_id(self.prev_node)}, {self.index})"


class Join(Expr):
    """The point where a traced fork group is joined back into its parent."""

    def __init__(self, branches: list[Expr | None], mode: str) -> None:
        super().__init__()
        self.branches = branches
        self.mode = mode

    def dependencies(self) -> Sequence[Expr]:
        return [b for b in self.branches if b is not None]

    def __repr__(self) -> str:
        ids = ", ".join(f"%{b.node_id}" for b in self.branches if b is not None)
        return f"Join([{ids}], mode={self.mode!r})"


def _node_id(node: Expr | None) -> int | None:
    # `is None`, never truthiness: an Argument refuses `bool()` while tracing.
    return None if node is None else node.node_id
