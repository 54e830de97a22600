"""What executing each IR node does to a stream (called on the stream's worker thread)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from radixlm.backend.base import ImageData
from radixlm.global_config import global_config
from radixlm.ir import (
    CommitLazy,
    ConcatenateAndAppend,
    ConstantText,
    Expr,
    ExprList,
    Gen,
    Image,
    RoleBegin,
    RoleEnd,
    Select,
    VarScopeBegin,
    VarScopeEnd,
)
from radixlm.sampling import resolve

if TYPE_CHECKING:
    from radixlm.stream_executor import StreamExecutor


def execute(ex: StreamExecutor, expr: Expr) -> None:
    handler = _HANDLERS.get(type(expr))
    if handler is None:
        raise TypeError(f"{expr!r} cannot be executed; it only appears in traces")
    handler(ex, expr)


def run_list(ex: StreamExecutor, expr: ExprList) -> None:
    for item in expr.exprs:
        execute(ex, item)


def run_constant(ex: StreamExecutor, expr: ConstantText) -> None:
    ex.append_text(expr.value)


def run_gen(ex: StreamExecutor, expr: Gen) -> None:
    params = resolve(ex.defaults, expr.overrides, ex.chat_template.stop_str)
    prompt = ex.prompt()
    if not ex.stream:
        text, meta_info = ex.backend.generate(prompt, params)
        ex.append_text(text)
        ex.set_result(expr.name, text, meta_info)
        return
    # Streaming: the variable exists (and grows) while the completion arrives.
    meta_info = None
    ex.set_result(expr.name, "", meta_info, done=False)
    for delta, meta_info in ex.backend.generate_stream(prompt, params):
        ex.append_text(delta, expr.name, meta_info)
    ex.set_result(expr.name, ex.variables.get(expr.name), meta_info)


def run_select(ex: StreamExecutor, expr: Select) -> None:
    decision = ex.backend.select(ex.prompt(), expr.choices, expr.temperature, expr.choices_method)
    ex.append_text(decision.decision)
    ex.set_result(expr.name, decision.decision, decision.meta_info)


def run_role_begin(ex: StreamExecutor, expr: RoleBegin) -> None:
    if ex.cur_role is not None:
        raise ValueError(f"roles cannot nest: {expr.role!r} began inside {ex.cur_role!r}")
    default_system = ex.chat_template.default_system_prompt
    if not ex.messages_ and expr.role != "system" and default_system:
        run_role_begin(ex, RoleBegin("system"))
        ex.append_text(default_system)
        run_role_end(ex, RoleEnd("system"))
    prefix, _ = ex.chat_template.get_prefix_and_suffix(expr.role, ex.messages_)
    ex.append_text(prefix)
    ex.cur_role = expr.role
    ex.cur_role_begin_pos = len(ex.text_)


def run_role_end(ex: StreamExecutor, expr: RoleEnd) -> None:
    if ex.cur_role != expr.role:
        raise ValueError(f"role {expr.role!r} ended but the open role is {ex.cur_role!r}")
    content: str | list[dict] = ex.text_[ex.cur_role_begin_pos :].lstrip()
    _, suffix = ex.chat_template.get_prefix_and_suffix(expr.role, ex.messages_)
    ex.append_text(suffix)
    if ex.role_images:
        content = [{"type": "text", "text": content}] + [
            {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{i.base64}"}}
            for i in ex.role_images
        ]
    ex.messages_.append({"role": expr.role, "content": content})
    ex.role_images = []
    ex.cur_role = None


def run_image(ex: StreamExecutor, expr: Image) -> None:
    if isinstance(expr.source, bytes):
        data, label = expr.source, "<bytes>"
    else:
        with open(expr.source, "rb") as f:
            data, label = f.read(), expr.source
    image = ImageData(label, base64.b64encode(data).decode("ascii"))
    ex.images_.append(image)
    ex.role_images.append(image)
    ex.append_text(ex.chat_template.image_token)


def run_var_scope_begin(ex: StreamExecutor, expr: VarScopeBegin) -> None:
    ex.scope_starts[expr.name] = len(ex.text_)


def run_var_scope_end(ex: StreamExecutor, expr: VarScopeEnd) -> None:
    start = ex.scope_starts.pop(expr.name)
    ex.set_result(expr.name, ex.text_[start:], None)


def run_commit_lazy(ex: StreamExecutor, expr: CommitLazy) -> None:
    if ex.text_:
        ex.backend.commit_lazy_operations(ex.prompt())


def run_concatenate_and_append(ex: StreamExecutor, expr: ConcatenateAndAppend) -> None:
    children = [state.stream_executor for state in expr.states]
    splice_kv = global_config.enable_parallel_encoding and ex.backend.support_concate_and_append
    if splice_kv:
        for child in children:
            child.submit(CommitLazy())
    for child in children:
        child.sync()
    ex.append_text("".join(c.text_[c.fork_start_text_pos :] for c in children))
    if splice_kv:
        ex.backend.concatenate_and_append([c.sid for c in children], ex.sid)


_HANDLERS: dict[type, Callable[[StreamExecutor, Any], None]] = {
    ExprList: run_list,
    ConstantText: run_constant,
    Gen: run_gen,
    Select: run_select,
    RoleBegin: run_role_begin,
    RoleEnd: run_role_end,
    Image: run_image,
    VarScopeBegin: run_var_scope_begin,
    VarScopeEnd: run_var_scope_end,
    CommitLazy: run_commit_lazy,
    ConcatenateAndAppend: run_concatenate_and_append,
}
