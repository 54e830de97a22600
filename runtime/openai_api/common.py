"""What both OpenAI routes share: the serving context, request ids, the context-length check,
building the per-choice requests, finish reasons and usage."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec

from radixlm.runtime.errors import InvalidRequestError
from radixlm.runtime.generate_request import MAX_BATCH, ParsedRequest
from radixlm.runtime.io_struct import FinishReason
from radixlm.runtime.openai_api.logprobs import TokenTexts
from radixlm.runtime.sampling_params import SamplingParams
from radixlm.runtime.tokenizer_manager import RequestState, TokenizerManager


@dataclass
class ServingContext:
    manager: TokenizerManager
    model_names: frozenset[str]  # accepted in `model`; the first listed one is reported
    served_model_name: str
    context_len: int
    token_texts: TokenTexts


def check_model(ctx: ServingContext, model: Any) -> None:
    if model is None:
        return
    if not isinstance(model, str):
        raise InvalidRequestError("model must be a string", "model")
    if model not in ctx.model_names:
        raise InvalidRequestError(f"The model `{model}` does not exist.", "model", 404)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now_s() -> int:
    return int(time.time())


def chunk_maker(ctx: ServingContext, rid: str, object_name: str, include_usage: bool):
    """Builds the stream chunks of one call: same id, object, creation time and model in each."""
    created = now_s()

    def chunk(entries: list[dict], usage: dict | None = None) -> dict:
        out = {
            "id": rid,
            "object": object_name,
            "created": created,
            "model": ctx.served_model_name,
            "choices": entries,
        }
        if include_usage:
            out["usage"] = usage
        return out

    return chunk


def check_context(
    ctx: ServingContext, num_prompt: int, max_tokens: int | None, field: str, noun: str
) -> int:
    """Returns max_new_tokens: ``max_tokens``, or (None) all the context the prompt leaves."""
    limit = ctx.context_len
    if max_tokens is None:
        if num_prompt >= limit:
            raise InvalidRequestError(
                f"This model's maximum context length is {limit} tokens. However, your {noun} "
                f"resulted in {num_prompt} tokens. Please reduce the length of the {noun}.",
                field,
            )
        return limit - num_prompt
    if num_prompt + max_tokens > limit:
        raise InvalidRequestError(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{num_prompt + max_tokens} tokens ({num_prompt} in the {noun}, {max_tokens} in the "
            f"completion). Please reduce the length of the {noun} or completion.",
            field,
        )
    return max_tokens


def choice_requests(
    ctx: ServingContext,
    prompt_ids: list[int],
    params: SamplingParams,
    n: int,
    rid_prefix: str,
    constraint_field: str = "response_format",
    **fields: Any,
) -> list[tuple[ParsedRequest, list[int]]]:
    """n validated requests for one prompt; seeded choices get seed, seed + 1, ... so they
    differ from each other yet each is reproducible."""
    out = []
    for j in range(n):
        seed = params.sampling_seed
        request = ParsedRequest(
            rid=f"{rid_prefix}-{j}",
            text=None,
            input_ids=prompt_ids,
            sampling=msgspec.structs.replace(
                params, n=1, sampling_seed=None if seed is None else seed + j
            ),
            **fields,
        )
        out.append((request, checked_ids(ctx, request, constraint_field)))
    return out


def checked_ids(ctx: ServingContext, request: ParsedRequest, constraint_field: str) -> list[int]:
    """The manager's edge checks (vocabulary, context, grammar pre-validation); a bad grammar is
    blamed on the field the client used (``regex``, ``response_format`` or ``tools``)."""
    try:
        return ctx.manager.check_request(request)
    except InvalidRequestError as exc:
        kind = (exc.field or "").removeprefix("sampling_params.")
        if kind in ("regex", "json_schema", "ebnf"):
            name = constraint_field if kind == "json_schema" else kind
            message = exc.message.replace(f"sampling_params.{kind}", name)
            raise InvalidRequestError(message, name, exc.status_code) from None
        raise


def check_batch_size(num_choices: int) -> None:
    if num_choices > MAX_BATCH:
        raise InvalidRequestError(f"at most {MAX_BATCH} choices per request (prompts times n)", "n")


def finish_reason(finish: FinishReason | None) -> str | None:
    if finish is None:
        return None
    return "length" if finish.type == "length" else "stop"


def visible_logprob_count(state: RequestState) -> int:
    """Logprob entries to show: all but a trailing stop token (it is not part of the text)."""
    count = len(state.output_logprobs)
    finish = state.last.finish if state.last is not None else None
    trimmed = finish is not None and finish.type == "stop" and isinstance(finish.matched, int)
    if trimmed and not state.request.sampling.no_stop_trim and count:
        return count - 1
    return count


def usage(prompt_states: list[RequestState], all_states: list[RequestState]) -> dict[str, Any]:
    """``prompt_states``: one state per distinct prompt (its n copies are billed once)."""
    prompt_tokens = sum(s.last.prompt_tokens for s in prompt_states)
    completion_tokens = sum(s.last.completion_tokens for s in all_states)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {
            "cached_tokens": sum(s.last.cached_tokens for s in prompt_states)
        },
    }
