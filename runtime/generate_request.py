"""Parses SGLang's native `/generate` body into one ParsedRequest per output (batch and n expanded)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import msgspec

from radixlm.runtime.errors import InvalidRequestError
from radixlm.runtime.sampling_params import INT64_RANGE, SamplingParams

MAX_BATCH = 1024


@dataclass(frozen=True)
class ParsedRequest:
    rid: str
    text: str | None
    input_ids: list[int] | None
    sampling: SamplingParams
    stream: bool = False
    return_logprob: bool = False
    logprob_start_len: int = -1
    top_logprobs_num: int = 0
    return_text_in_logprobs: bool = False


@dataclass(frozen=True)
class ParsedGenerate:
    requests: list[ParsedRequest]
    is_batch: bool  # answer with a JSON list (a list input, or n > 1)
    stream: bool


def parse_generate(body: Any) -> ParsedGenerate:
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object", "body")
    text, input_ids = body.get("text"), body.get("input_ids")
    if text is not None and input_ids is not None:
        raise InvalidRequestError("give either text or input_ids, not both", "text")
    if text is None and input_ids is None:
        raise InvalidRequestError("one of text or input_ids is required", "text")
    if text is not None:
        inputs, is_list = _texts(text)
    else:
        inputs, is_list = _id_lists(input_ids)
    batch = len(inputs)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequestError("stream must be a boolean", "stream")
    raw_params = body.get("sampling_params")
    sampling = [
        SamplingParams.from_request(
            p, f"sampling_params[{i}]" if isinstance(raw_params, list) else "sampling_params"
        )
        for i, p in enumerate(_per_item(raw_params, batch, "sampling_params"))
    ]
    return_logprob = _per_item(body.get("return_logprob"), batch, "return_logprob")
    start_lens = _per_item(body.get("logprob_start_len"), batch, "logprob_start_len")
    top_nums = _per_item(body.get("top_logprobs_num"), batch, "top_logprobs_num")
    with_text = body.get("return_text_in_logprobs") or False
    rids = _per_item(body.get("rid"), batch, "rid")
    requests: list[ParsedRequest] = []
    for i, item in enumerate(inputs):
        params = sampling[i]
        want_logprob = _bool(return_logprob[i], "return_logprob")
        start = start_lens[i]
        if start is None:
            # SGLang's client asks for input logprobs with max_new_tokens 0 and no start position.
            start = 0 if (want_logprob and params.max_new_tokens == 0) else -1
        start = _int(start, "logprob_start_len", minimum=-1)
        top_n = _int(top_nums[i] or 0, "top_logprobs_num", minimum=0, maximum=20)
        base_rid = rids[i] if rids[i] is not None else uuid.uuid4().hex
        if not isinstance(base_rid, str) or not base_rid:
            raise InvalidRequestError("rid must be a non-empty string", "rid")
        for j in range(params.n):
            seed = params.sampling_seed
            requests.append(
                ParsedRequest(
                    rid=base_rid if params.n == 1 else f"{base_rid}-{j}",
                    text=item if isinstance(item, str) else None,
                    input_ids=item if isinstance(item, list) else None,
                    # Parallel samples of one prompt must differ even with a fixed seed.
                    sampling=replace_seed(params, None if seed is None else seed + j),
                    stream=stream,
                    return_logprob=want_logprob,
                    logprob_start_len=start,
                    top_logprobs_num=top_n,
                    return_text_in_logprobs=bool(with_text),
                )
            )
    if len(requests) > MAX_BATCH:
        raise InvalidRequestError(f"at most {MAX_BATCH} outputs per request", "text")
    is_batch = is_list or any(p.n > 1 for p in sampling)
    if stream and is_batch and len(requests) > 1:
        raise InvalidRequestError("stream is supported for a single prompt with n = 1", "stream")
    return ParsedGenerate(requests=requests, is_batch=is_batch, stream=stream)


def replace_seed(params: SamplingParams, seed: int | None) -> SamplingParams:
    return msgspec.structs.replace(params, sampling_seed=seed, n=1)


def _texts(text: Any) -> tuple[list[str], bool]:
    items, is_list = (text, True) if isinstance(text, list) else ([text], False)
    if not items:
        raise InvalidRequestError("text must not be an empty list", "text")
    for i, t in enumerate(items):
        name = f"text[{i}]" if is_list else "text"
        if not isinstance(t, str):
            raise InvalidRequestError(f"{name} must be a string", name)
        if not t:
            raise InvalidRequestError(f"{name} must not be empty", name)
    return items, is_list


def _id_lists(input_ids: Any) -> tuple[list[list[int]], bool]:
    if not isinstance(input_ids, list) or not input_ids:
        raise InvalidRequestError("input_ids must be a non-empty list of token ids", "input_ids")
    is_list = isinstance(input_ids[0], list)
    items = input_ids if is_list else [input_ids]
    for i, ids in enumerate(items):
        name = f"input_ids[{i}]" if is_list else "input_ids"
        if not isinstance(ids, list) or not ids:
            raise InvalidRequestError(f"{name} must be a non-empty list of token ids", name)
        if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in ids):
            raise InvalidRequestError(f"{name} must hold non-negative integers", name)
    return items, is_list


def _per_item(value: Any, batch: int, name: str) -> list[Any]:
    if isinstance(value, list):
        if len(value) != batch:
            raise InvalidRequestError(f"{name} has {len(value)} entries for {batch} inputs", name)
        return value
    return [value] * batch


def _bool(value: Any, name: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequestError(f"{name} must be a boolean", name)
    return value


def _int(value: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(f"{name} must be an integer, got {value!r}", name)
    if value not in INT64_RANGE:
        raise InvalidRequestError(f"{name} must fit in 64 bits, got {value}", name)
    if minimum is not None and value < minimum:
        raise InvalidRequestError(f"{name} must be >= {minimum}, got {value}", name)
    if maximum is not None and value > maximum:
        raise InvalidRequestError(f"{name} must be <= {maximum}, got {value}", name)
    return value
