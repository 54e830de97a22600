"""Typed reads of OpenAI request fields, and the mapping of sampling fields onto SamplingParams.

Every error names the OpenAI field (``max_tokens``, not ``max_new_tokens``): clients see the
names they sent.
"""

from __future__ import annotations

import math
from typing import Any

from radixlm.runtime.errors import InvalidRequestError
from radixlm.runtime.sampling_params import MAX_N, SamplingParams

MAX_TOP_LOGPROBS = 20
# OpenAI's own range; SamplingParams alone accepts any temperature >= 0.
MAX_TEMPERATURE = 2.0

# SamplingParams key -> the OpenAI name a client used for it.
_OPENAI_NAMES = {
    "max_new_tokens": "max_tokens",
    "min_new_tokens": "min_tokens",
    "sampling_seed": "seed",
}
_PREFIX = "sampling_params"


class Fields:
    """Reads fields of one JSON object; a missing key or null means "not given"."""

    def __init__(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise InvalidRequestError("the request body must be a JSON object", "body")
        self.body = body

    def get(self, key: str) -> Any:
        return self.body.get(key)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.body.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise InvalidRequestError(f"{key} must be a boolean, got {value!r}", key)
        return value

    def integer(
        self, key: str, default: int | None, minimum: int | None = None, maximum: int | None = None
    ) -> int | None:
        value = self.body.get(key)
        if value is None:
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequestError(f"{key} must be an integer, got {value!r}", key)
        if minimum is not None and value < minimum:
            raise InvalidRequestError(f"{key} must be >= {minimum}, got {value}", key)
        if maximum is not None and value > maximum:
            raise InvalidRequestError(f"{key} must be <= {maximum}, got {value}", key)
        return value

    def number(self, key: str, minimum: float, maximum: float) -> float | None:
        value = self.body.get(key)
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise InvalidRequestError(f"{key} must be a number, got {value!r}", key)
        if not minimum <= value <= maximum:
            raise InvalidRequestError(f"{key} must be in [{minimum}, {maximum}], got {value}", key)
        return float(value)

    def string(self, key: str) -> str | None:
        value = self.body.get(key)
        if value is not None and not isinstance(value, str):
            raise InvalidRequestError(f"{key} must be a string", key)
        return value


def read_n(fields: Fields) -> int:
    return fields.integer("n", 1, minimum=1, maximum=MAX_N)


def read_stream(fields: Fields) -> tuple[bool, bool]:
    """(stream, include_usage). ``stream_options`` is only meaningful with ``stream``."""
    stream = fields.boolean("stream", False)
    options = fields.get("stream_options")
    if options is None:
        return stream, False
    if not isinstance(options, dict):
        raise InvalidRequestError("stream_options must be an object", "stream_options")
    if not stream:
        raise InvalidRequestError(
            "stream_options is only allowed when stream is true", "stream_options"
        )
    include_usage = Fields(options).boolean("include_usage", False)
    return stream, include_usage


def sampling_values(fields: Fields) -> dict[str, Any]:
    """The sampling fields shared by both routes, under SamplingParams' key names."""
    fields.number("temperature", 0.0, MAX_TEMPERATURE)  # OpenAI's range check
    fields.string("user")
    values: dict[str, Any] = {}
    for key in (
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "stop",
        "stop_token_ids",
        "logit_bias",
        "ignore_eos",
        "skip_special_tokens",
        "no_stop_trim",
        "regex",
        "ebnf",
    ):
        if fields.get(key) is not None:
            values[key] = fields.get(key)
    if fields.get("seed") is not None:
        values["sampling_seed"] = fields.get("seed")
    if fields.get("min_tokens") is not None:
        values["min_new_tokens"] = fields.get("min_tokens")
    return values


def check_logit_bias(values: dict[str, Any], vocab_size: int) -> None:
    bias = values.get("logit_bias")
    if not isinstance(bias, dict):
        return  # SamplingParams names the malformed field
    for key in bias:
        try:
            token_id = int(key)
        except (TypeError, ValueError):
            continue  # SamplingParams names the malformed key
        if not 0 <= token_id < vocab_size:
            raise InvalidRequestError(
                f"logit_bias has token id {token_id}, outside the vocabulary [0, {vocab_size})",
                "logit_bias",
            )


def to_sampling_params(values: dict[str, Any]) -> SamplingParams:
    """SamplingParams.from_request, with its errors renamed to the OpenAI fields."""
    try:
        return SamplingParams.from_request(values, _PREFIX)
    except InvalidRequestError as exc:
        key = (exc.field or "").removeprefix(_PREFIX).removeprefix(".")
        name = _OPENAI_NAMES.get(key, key) or None
        message = exc.message.replace(f"{_PREFIX}.{key}", name or "").replace(
            f"{_PREFIX}:", "request:"
        )
        for internal, public in _OPENAI_NAMES.items():
            message = message.replace(internal, public)
        raise InvalidRequestError(message, name, exc.status_code) from None
