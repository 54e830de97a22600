"""The scheduler's grammar queue: requests wait here while their grammar compiles off the loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from radixlm.runtime.request import Req


def grammar_spec_of(req: Req) -> tuple[str, str] | None:
    """(kind, value) of the request's constraint, or None."""
    params = req.params
    for kind in ("regex", "json_schema", "ebnf"):
        value = getattr(params, kind)
        if value is not None:
            return kind, value
    return None


class GrammarManager:
    """Owns the compile futures; ``collect_ready`` is polled once per step and never blocks."""

    def __init__(self, compiler: Any | None, make_spec: Callable[[str, str], Any] | None) -> None:
        # compiler: constrained.GrammarCompiler or None when --grammar-backend none.
        self.compiler = compiler
        self.make_spec = make_spec
        self.pending: list[Req] = []

    def needs_grammar(self, req: Req) -> bool:
        return grammar_spec_of(req) is not None

    def submit(self, req: Req) -> None:
        kind, value = grammar_spec_of(req)
        if self.compiler is None:
            req.grammar_future = _failed_future(
                "constrained decoding is disabled (--grammar-backend none)"
            )
        else:
            req.grammar_future = self.compiler.submit(self.make_spec(kind, value))
        self.pending.append(req)

    def collect_ready(self, on_failure: Callable[[Req, str], None]) -> list[Req]:
        ready = []
        for req in [r for r in self.pending if r.grammar_future.done()]:
            self.pending.remove(req)
            try:
                compiled = req.grammar_future.result()
            except Exception as exc:  # GrammarError or compile timeout: this request only
                on_failure(req, f"invalid grammar: {getattr(exc, 'message', None) or exc}")
                continue
            finally:
                req.grammar_future = None
            req.grammar = compiled.new_matcher()
            ready.append(req)
        return ready

    def remove(self, rid: str, remove_all: bool) -> list[Req]:
        removed = [r for r in self.pending if remove_all or r.rid == rid]
        for req in removed:
            self.pending.remove(req)
            # Dropped, never cancelled: the compiler hands the same future to every request with
            # this spec (and caches it), so cancelling would fail the others waiting on it.
            req.grammar_future = None
        return removed

    def discard(self, req: Req) -> None:
        req.grammar = None


def _failed_future(message: str):
    from concurrent.futures import Future

    future: Future = Future()
    future.set_exception(ValueError(message))
    return future
