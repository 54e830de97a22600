"""The primitives programs append (`gen`, `select`, roles, `image`) and backend helpers."""

from __future__ import annotations

import re
from typing import Any

from radixlm.choices import ChoicesSamplingMethod, token_length_normalized
from radixlm.global_config import global_config
from radixlm.ir import Expr, ExprList, Gen, Image, RoleBegin, RoleEnd, Select, as_expr
from radixlm.run_program import resolve_backend
from radixlm.sampling import SamplingOverrides, StopSpec, normalize_dtype, normalize_json_schema


def gen(
    name: str | None = None,
    max_tokens: int | None = None,
    min_tokens: int | None = None,
    n: int | None = None,
    stop: StopSpec | None = None,
    stop_token_ids: list[int] | None = None,
    stop_regex: StopSpec | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    min_p: float | None = None,
    frequency_penalty: float | None = None,
    presence_penalty: float | None = None,
    ignore_eos: bool | None = None,
    return_logprob: bool | None = None,
    logprob_start_len: int | None = None,
    top_logprobs_num: int | None = None,
    return_text_in_logprobs: bool | None = None,
    dtype: type | str | None = None,
    choices: list[str] | None = None,
    choices_method: ChoicesSamplingMethod | None = None,
    regex: str | None = None,
    json_schema: str | dict | None = None,
) -> Gen | Select:
    """Generates text into variable `name`. None arguments inherit the run's defaults.

    `choices` makes it a `select`; `dtype` (int, float, str, bool), `regex` or `json_schema`
    constrain the output.
    """
    if choices:
        return select(
            name,
            choices,
            0.0 if temperature is None else temperature,
            choices_method or token_length_normalized,
        )
    if regex is not None:
        re.compile(regex)  # fail here, where the program wrote it, not in the server
        if json_schema is not None:
            raise ValueError("gen takes one of regex and json_schema, not both")
    overrides = SamplingOverrides(
        max_new_tokens=max_tokens,
        min_new_tokens=min_tokens,
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
        dtype=normalize_dtype(dtype),
        regex=regex,
        json_schema=normalize_json_schema(json_schema),
    )
    return Gen(name, overrides)


def gen_int(name: str | None = None, **sampling: Any) -> Gen:
    """`gen(dtype=int)`: an optionally signed integer (the text stops at a space or newline)."""
    return _typed_gen(name, int, sampling)


def gen_string(name: str | None = None, **sampling: Any) -> Gen:
    """`gen(dtype=str)`: a double-quoted string of word characters and spaces."""
    return _typed_gen(name, str, sampling)


# What gen_int / gen_string take besides the name (SGLang's list: no constraints, no min).
_TYPED_GEN_KEYS = frozenset(
    "max_tokens n stop stop_token_ids stop_regex temperature top_p top_k min_p frequency_penalty "
    "presence_penalty ignore_eos return_logprob logprob_start_len top_logprobs_num "
    "return_text_in_logprobs".split()
)


def _typed_gen(name: str | None, dtype: type, sampling: dict[str, Any]) -> Gen:
    unknown = set(sampling) - _TYPED_GEN_KEYS
    if unknown:
        raise TypeError(f"unexpected arguments {sorted(unknown)}")
    out = gen(name, dtype=dtype, **sampling)
    assert isinstance(out, Gen)
    return out


def select(
    name: str | None = None,
    choices: list[str] | None = None,
    temperature: float = 0.0,
    choices_method: ChoicesSamplingMethod = token_length_normalized,
) -> Select:
    """Appends whichever of `choices` the model scores best (and stores it in `name`)."""
    if not choices:
        raise ValueError("select needs a non-empty list of choices")
    return Select(name, list(choices), temperature, choices_method)


def image(source: str | bytes) -> Image:
    """An image from a file path or raw bytes."""
    return Image(source)


def _role(role: str, expr: Expr | str | None) -> ExprList:
    inner = [] if expr is None else [as_expr(expr)]
    return ExprList([RoleBegin(role), *inner, RoleEnd(role)])


def system(expr: Expr | str | None = None) -> ExprList:
    return _role("system", expr)


def user(expr: Expr | str | None = None) -> ExprList:
    return _role("user", expr)


def assistant(expr: Expr | str | None = None) -> ExprList:
    return _role("assistant", expr)


def system_begin() -> RoleBegin:
    return RoleBegin("system")


def system_end() -> RoleEnd:
    return RoleEnd("system")


def user_begin() -> RoleBegin:
    return RoleBegin("user")


def user_end() -> RoleEnd:
    return RoleEnd("user")


def assistant_begin() -> RoleBegin:
    return RoleBegin("assistant")


def assistant_end() -> RoleEnd:
    return RoleEnd("assistant")


def set_default_backend(backend: Any) -> None:
    """The backend `run`/`run_batch` use when none is given (a `Runtime` works too)."""
    global_config.default_backend = backend


def flush_cache(backend: Any = None) -> None:
    resolve_backend(backend).flush_cache()


def get_server_info(backend: Any = None) -> dict:
    return resolve_backend(backend).get_server_info()
