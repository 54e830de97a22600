"""Sampling parameters of the language: run-level defaults, per-gen overrides, and how they merge.

The rules follow SGLang's interpreter so that programs port unchanged and send the same bodies:
a gen's value replaces the run's value when it is not None (`stop` included: a gen's stop list
replaces the run's, it does not extend it), then the chat template's stop strings are appended to
every gen's stop list.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

# Names accepted for `dtype`; SGLang accepts both the Python type and its name.
_DTYPE_NAMES = {int: "int", float: "float", str: "str", bool: "bool"}

StopSpec = str | list[str] | tuple[str, ...]


def normalize_dtype(dtype: type | str | None) -> str | None:
    if dtype is None:
        return None
    name = _DTYPE_NAMES.get(dtype, dtype)  # type: ignore[call-overload]
    if name not in _DTYPE_NAMES.values():
        raise ValueError(f"dtype must be one of int, float, str, bool; got {dtype!r}")
    return name


def normalize_json_schema(schema: str | dict | None) -> str | None:
    """The wire carries a JSON schema as a string; a dict is serialized for convenience."""
    if schema is None or isinstance(schema, str):
        return schema
    if isinstance(schema, dict):
        return json.dumps(schema)
    raise TypeError(f"json_schema must be a str or a dict, got {type(schema).__name__}")


@dataclass(frozen=True)
class SamplingParams:
    """Fully resolved parameters of one gen (run defaults, then gen overrides, then template)."""

    max_new_tokens: int = 128
    min_new_tokens: int = 0
    n: int = 1
    stop: StopSpec = ()
    stop_token_ids: list[int] | tuple[int, ...] = ()
    stop_regex: StopSpec = ()
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1 disables top-k
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    ignore_eos: bool = False
    # Logprob requests: sent as top-level body keys, and only when not None.
    return_logprob: bool | None = None
    logprob_start_len: int | None = None
    top_logprobs_num: int | None = None
    return_text_in_logprobs: bool | None = None
    # Constraints: `dtype` is "int" | "float" | "str" | "bool"; `json_schema` is a JSON string.
    dtype: str | None = None
    regex: str | None = None
    json_schema: str | None = None


@dataclass(frozen=True)
class SamplingOverrides:
    """What one `gen(...)` sets; None means "inherit the run's value"."""

    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    n: int | None = None
    stop: StopSpec | None = None
    stop_token_ids: list[int] | tuple[int, ...] | None = None
    stop_regex: StopSpec | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    ignore_eos: bool | None = None
    return_logprob: bool | None = None
    logprob_start_len: int | None = None
    top_logprobs_num: int | None = None
    return_text_in_logprobs: bool | None = None
    dtype: str | None = None
    regex: str | None = None
    json_schema: str | None = None


def run_defaults(**values: Any) -> SamplingParams:
    """The defaults of `f.run(...)` / `f.run_batch(...)`; a None list argument means empty."""
    for key in ("stop", "stop_token_ids", "stop_regex"):
        if values.get(key) is None:
            values[key] = []
    return SamplingParams(**values)


def resolve(
    defaults: SamplingParams, overrides: SamplingOverrides, template_stop: tuple[str, ...]
) -> SamplingParams:
    """Merges one gen's overrides over the run defaults and appends the template's stops."""
    changes = {
        f.name: getattr(overrides, f.name)
        for f in dataclasses.fields(overrides)
        if getattr(overrides, f.name) is not None
    }
    merged = dataclasses.replace(defaults, **changes)
    if template_stop:
        merged = dataclasses.replace(merged, stop=stop_list(merged.stop) + list(template_stop))
    return merged


def stop_list(stop: StopSpec) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop)
