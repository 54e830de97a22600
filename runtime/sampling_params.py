"""Per-request sampling parameters: parsed and validated at the HTTP edge, carried to the scheduler.

Key names are SGLang's (`max_new_tokens`, `stop`, `top_k=-1` = off ...). ``from_request`` accepts
null values (SGLang's client sends all its keys, many as null) and raises ``InvalidRequestError``
naming the offending field.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from radixlm.runtime.errors import InvalidRequestError

MAX_N = 16
MAX_STOP_SEQUENCES = 32
# Integer fields travel to the scheduler in msgpack and into torch as int64.
INT64_RANGE = range(-(2**63), 2**63)


class SamplingParams(msgspec.Struct, frozen=True, kw_only=True):
    max_new_tokens: int = 128
    min_new_tokens: int = 0
    n: int = 1
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    no_stop_trim: bool = False
    sampling_seed: int | None = None
    # token id -> additive bias on the logit (OpenAI `logit_bias`).
    logit_bias: dict[int, float] = {}
    # Constraints (at most one): a regex, a JSON schema string, an EBNF grammar.
    regex: str | None = None
    json_schema: str | None = None
    ebnf: str | None = None

    @property
    def is_greedy(self) -> bool:
        return self.temperature < 1e-5 or self.top_k == 1

    @classmethod
    def from_request(cls, raw: Any, field_prefix: str = "sampling_params") -> SamplingParams:
        """Validates a JSON object of sampling params; nulls mean "use the default"."""
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise InvalidRequestError(f"{field_prefix} must be an object", field_prefix)
        values = {k: v for k, v in raw.items() if v is not None}
        out: dict[str, Any] = {}
        checker = _Checker(values, field_prefix)
        out["max_new_tokens"] = checker.integer("max_new_tokens", 128, minimum=0)
        out["min_new_tokens"] = checker.integer("min_new_tokens", 0, minimum=0)
        out["n"] = checker.integer("n", 1, minimum=1, maximum=MAX_N)
        out["temperature"] = checker.number("temperature", 1.0, minimum=0.0)
        out["top_p"] = checker.number(
            "top_p", 1.0, minimum=0.0, exclusive_minimum=True, maximum=1.0
        )
        top_k = checker.integer("top_k", -1)
        if top_k == 0 or top_k < -1:
            raise InvalidRequestError(
                f"{field_prefix}.top_k must be -1 (disabled) or a positive integer, got {top_k}",
                f"{field_prefix}.top_k",
            )
        out["top_k"] = top_k
        out["min_p"] = checker.number("min_p", 0.0, minimum=0.0, maximum=1.0)
        out["frequency_penalty"] = checker.number(
            "frequency_penalty", 0.0, minimum=-2.0, maximum=2.0
        )
        out["presence_penalty"] = checker.number("presence_penalty", 0.0, minimum=-2.0, maximum=2.0)
        out["repetition_penalty"] = checker.number(
            "repetition_penalty", 1.0, minimum=0.0, exclusive_minimum=True, maximum=2.0
        )
        for flag, default in (
            ("ignore_eos", False),
            ("skip_special_tokens", True),
            ("spaces_between_special_tokens", True),
            ("no_stop_trim", False),
        ):
            out[flag] = checker.boolean(flag, default)
        out["stop"] = checker.stop_strings()
        out["stop_token_ids"] = checker.int_list("stop_token_ids")
        seed = values.get("sampling_seed", values.get("seed"))
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed not in INT64_RANGE:
                raise InvalidRequestError(
                    f"{field_prefix}.sampling_seed must be a 64-bit integer",
                    f"{field_prefix}.sampling_seed",
                )
            out["sampling_seed"] = seed
        out["logit_bias"] = checker.logit_bias()
        constraints = {}
        for key in ("regex", "json_schema", "ebnf"):
            if key in values:
                value = values[key]
                if key == "json_schema" and isinstance(value, dict):
                    value = msgspec.json.encode(value).decode()
                if not isinstance(value, str):
                    raise InvalidRequestError(
                        f"{field_prefix}.{key} must be a string", f"{field_prefix}.{key}"
                    )
                constraints[key] = value
        if len(constraints) > 1:
            raise InvalidRequestError(
                f"{field_prefix}: only one of regex, json_schema, ebnf may be set", field_prefix
            )
        out.update(constraints)
        if out["min_new_tokens"] > out["max_new_tokens"]:
            raise InvalidRequestError(
                f"{field_prefix}.min_new_tokens ({out['min_new_tokens']}) must not exceed "
                f"max_new_tokens ({out['max_new_tokens']})",
                f"{field_prefix}.min_new_tokens",
            )
        return cls(**out)


class _Checker:
    """Type and range checks for one sampling-params object, with field-naming errors."""

    def __init__(self, values: dict[str, Any], prefix: str) -> None:
        self.values = values
        self.prefix = prefix

    def _fail(self, key: str, message: str) -> InvalidRequestError:
        return InvalidRequestError(f"{self.prefix}.{key} {message}", f"{self.prefix}.{key}")

    def integer(
        self, key: str, default: int, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self.values.get(key, default)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, f"must be an integer, got {value!r}")
        if value not in INT64_RANGE:
            raise self._fail(key, f"must fit in 64 bits, got {value}")
        if minimum is not None and value < minimum:
            raise self._fail(key, f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self._fail(key, f"must be <= {maximum}, got {value}")
        return value

    def number(
        self,
        key: str,
        default: float,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_minimum: bool = False,
    ) -> float:
        value = self.values.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise self._fail(key, f"must be a finite number, got {value!r}")
        if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
            bound = f"> {minimum}" if exclusive_minimum else f">= {minimum}"
            raise self._fail(key, f"must be {bound}, got {value}")
        if maximum is not None and value > maximum:
            raise self._fail(key, f"must be <= {maximum}, got {value}")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.values.get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, f"must be a boolean, got {value!r}")
        return value

    def stop_strings(self) -> tuple[str, ...]:
        value = self.values.get("stop", ())
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
            raise self._fail("stop", "must be a string or a list of strings")
        if len(value) > MAX_STOP_SEQUENCES:
            raise self._fail("stop", f"may hold at most {MAX_STOP_SEQUENCES} sequences")
        return tuple(s for s in value if s)

    def int_list(self, key: str) -> tuple[int, ...]:
        value = self.values.get(key, ())
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(t, int) and not isinstance(t, bool) and 0 <= t < INT64_RANGE.stop
            for t in value
        ):
            raise self._fail(key, "must be a list of non-negative 64-bit integers")
        return tuple(value)

    def logit_bias(self) -> dict[int, float]:
        value = self.values.get("logit_bias", {})
        if not isinstance(value, dict):
            raise self._fail("logit_bias", "must be an object mapping token ids to biases")
        out: dict[int, float] = {}
        for key, bias in value.items():
            try:
                token_id = int(key)
            except (TypeError, ValueError):
                raise self._fail("logit_bias", f"has a non-integer token id {key!r}") from None
            if token_id not in INT64_RANGE:
                raise self._fail("logit_bias", f"has token id {key} past 64 bits")
            if (
                isinstance(bias, bool)
                or not isinstance(bias, (int, float))
                or not -100 <= bias <= 100
            ):
                raise self._fail("logit_bias", f"bias for token {token_id} must be in [-100, 100]")
            out[token_id] = float(bias)
        return out
