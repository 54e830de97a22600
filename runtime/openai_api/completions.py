"""``POST /v1/completions``: prompt(s) as text or token ids, ``echo``, legacy logprobs, n."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from radixlm.runtime.errors import InvalidRequestError
from radixlm.runtime.http_server import cancel_on_disconnect, start_stream
from radixlm.runtime.openai_api import common, streams
from radixlm.runtime.openai_api.fields import (
    MAX_TOP_LOGPROBS,
    Fields,
    check_logit_bias,
    read_n,
    read_stream,
    sampling_values,
    to_sampling_params,
)
from radixlm.runtime.openai_api.logprobs import completion_logprobs, merge_completion_logprobs
from radixlm.runtime.openai_api.response_format import add_json_schema, json_schema_of
from radixlm.runtime.tokenizer_manager import RequestState

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this route


@dataclass(frozen=True)
class CompletionCall:
    prompts: list[str | list[int]]
    n: int
    stream: bool
    include_usage: bool
    echo: bool
    logprobs: int | None
    max_tokens: int
    sampling: dict[str, Any]  # SamplingParams keys, without max_new_tokens


def parse_completion(body: Any, vocab_size: int) -> CompletionCall:
    fields = Fields(body)
    stream, include_usage = read_stream(fields)
    echo = fields.boolean("echo", False)
    if fields.get("suffix"):
        raise InvalidRequestError("suffix is not supported", "suffix")
    n = read_n(fields)
    best_of = fields.integer("best_of", None, minimum=1)
    if best_of is not None and best_of != n:
        raise InvalidRequestError(
            "best_of must equal n (other values are not supported)", "best_of"
        )
    sampling = sampling_values(fields)
    schema = json_schema_of(fields.get("response_format"))
    add_json_schema(sampling, schema, "response_format")
    check_logit_bias(sampling, vocab_size)
    return CompletionCall(
        prompts=_prompts(fields.get("prompt"), vocab_size),
        n=n,
        stream=stream,
        include_usage=include_usage,
        echo=echo,
        logprobs=fields.integer("logprobs", None, minimum=0, maximum=MAX_TOP_LOGPROBS),
        max_tokens=fields.integer("max_tokens", DEFAULT_MAX_TOKENS, minimum=0 if echo else 1),
        sampling=sampling,
    )


def _prompts(prompt: Any, vocab_size: int) -> list[str | list[int]]:
    """A string, a list of strings, a list of token ids, or a list of token-id lists."""
    if isinstance(prompt, str):
        items: list[Any] = [prompt]
    elif isinstance(prompt, list) and prompt and all(_is_id(t) for t in prompt):
        items = [prompt]
    elif isinstance(prompt, list) and prompt:
        items = prompt
    else:
        raise InvalidRequestError(
            "prompt must be a non-empty string, list of strings or list of token ids", "prompt"
        )
    for i, item in enumerate(items):
        where = "prompt" if len(items) == 1 else f"prompt[{i}]"
        if isinstance(item, str):
            if not item:
                raise InvalidRequestError(f"{where} must not be empty", where)
        elif isinstance(item, list) and item and all(_is_id(t) for t in item):
            bad = next((t for t in item if not 0 <= t < vocab_size), None)
            if bad is not None:
                raise InvalidRequestError(
                    f"{where} contains token id {bad}, outside the vocabulary [0, {vocab_size})",
                    where,
                )
        else:
            raise InvalidRequestError(
                f"{where} must be a non-empty string or list of token ids", where
            )
    return items


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class _Choice:
    index: int
    state: RequestState
    prompt_text: str  # echoed before the completion when asked


async def create_completion(ctx: common.ServingContext, request: Request, body: Any) -> Response:
    call = parse_completion(body, ctx.manager.vocab_size)
    common.check_model(ctx, body.get("model"))
    common.check_batch_size(len(call.prompts) * call.n)
    tokenizer = ctx.manager.tokenizer
    params = to_sampling_params({**call.sampling, "max_new_tokens": call.max_tokens})
    rid = common.new_id("cmpl")
    groups, prompt_texts = [], []
    for i, prompt in enumerate(call.prompts):
        ids = tokenizer.encode(prompt) if isinstance(prompt, str) else prompt
        if not ids:
            raise InvalidRequestError("prompt tokenizes to nothing", "prompt")
        common.check_context(ctx, len(ids), call.max_tokens, "prompt", "prompt")
        want_logprobs = call.logprobs is not None
        groups.extend(
            common.choice_requests(
                ctx,
                ids,
                params,
                call.n,
                f"{rid}-{i}",
                stream=call.stream,
                return_logprob=want_logprobs,
                logprob_start_len=0 if (call.echo and want_logprobs) else -1,
                top_logprobs_num=call.logprobs or 0,
            )
        )
        text = prompt if isinstance(prompt, str) else tokenizer.decode(prompt)
        prompt_texts.extend([text] * call.n)
    states = ctx.manager.submit_many(groups)
    choices = [_Choice(i, s, prompt_texts[i]) for i, s in enumerate(states)]
    first_of_prompt = states[:: call.n]
    if call.stream:
        return await start_stream(_chunks(ctx, call, rid, choices, first_of_prompt), request)
    done = await cancel_on_disconnect(request, streams.run_to_end(ctx.manager, states))
    if isinstance(done, Response):
        return done
    return JSONResponse(
        {
            "id": rid,
            "object": "text_completion",
            "created": common.now_s(),
            "model": ctx.served_model_name,
            "choices": [_choice_json(ctx, call, c) for c in choices],
            "usage": common.usage(first_of_prompt, states),
        }
    )


def _choice_json(ctx: common.ServingContext, call: CompletionCall, choice: _Choice) -> dict:
    state = choice.state
    echo_text = choice.prompt_text if call.echo else ""
    logprobs = None
    if call.logprobs is not None:
        count = common.visible_logprob_count(state)
        tops = state.output_top_logprobs[:count] if call.logprobs else None
        echoed = _echo_logprobs(ctx, call, state) if call.echo else None
        first_offset = _end_offset(echoed) if echoed else 0
        out = completion_logprobs(
            ctx.token_texts, state.output_logprobs[:count], tops, first_offset
        )
        logprobs = merge_completion_logprobs(echoed, out) if echoed else out
    return {
        "index": choice.index,
        "text": echo_text + state.text,
        "logprobs": logprobs,
        "finish_reason": common.finish_reason(state.last.finish),
    }


def _echo_logprobs(ctx: common.ServingContext, call: CompletionCall, state: RequestState) -> dict:
    pairs, tops = state.input_logprobs, state.input_top_logprobs
    if not pairs:
        # A one-token prompt has no positions to score: its only token gets no logprob.
        pairs, tops = [(None, state.prompt_ids[0])], [[]]
    return completion_logprobs(ctx.token_texts, pairs, tops if call.logprobs else None, 0)


class _ChoiceStream:
    """What one choice has streamed so far."""

    def __init__(self, call: CompletionCall, choice: _Choice) -> None:
        self.call = call
        self.choice = choice
        self.sent_text = 0
        self.sent_logprobs = 0
        self.offset = 0  # text_offset of the next token
        self.started = False

    def entry(self, ctx: common.ServingContext, reason: str | None) -> dict | None:
        """The choice's next chunk entry, or None when there is nothing new to say."""
        state = self.choice.state
        text = state.text[self.sent_text :]
        self.sent_text = len(state.text)
        echo = self.call.echo and not self.started
        self.started = True
        logprobs = self._logprobs(ctx, echo) if self.call.logprobs is not None else None
        if echo:
            text = self.choice.prompt_text + text
        if not text and reason is None and not (logprobs and logprobs["tokens"]):
            return None
        return {
            "index": self.choice.index,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": reason,
        }

    def _logprobs(self, ctx: common.ServingContext, echo: bool) -> dict:
        state = self.choice.state
        echoed = _echo_logprobs(ctx, self.call, state) if echo else None
        if echoed:
            self.offset = _end_offset(echoed)
        start, end = self.sent_logprobs, common.visible_logprob_count(state)
        tops = state.output_top_logprobs[start:end] if self.call.logprobs else None
        part = completion_logprobs(
            ctx.token_texts, state.output_logprobs[start:end], tops, self.offset
        )
        self.sent_logprobs = max(end, start)
        self.offset = _end_offset(part, self.offset)
        return merge_completion_logprobs(echoed, part) if echoed else part


async def _chunks(
    ctx: common.ServingContext,
    call: CompletionCall,
    rid: str,
    choices: list[_Choice],
    first_of_prompt: list[RequestState],
) -> AsyncIterator[dict]:
    progress = [_ChoiceStream(call, c) for c in choices]

    chunk = common.chunk_maker(ctx, rid, "text_completion", call.include_usage)

    states = [c.state for c in choices]
    async for index, update in streams.merged_updates(ctx.manager, states):
        failure = streams.failure_of(update)
        if failure is not None:
            raise failure
        entry = progress[index].entry(ctx, common.finish_reason(update.finish))
        if entry is not None:
            yield chunk([entry])
    if call.include_usage:
        yield chunk([], common.usage(first_of_prompt, states))


def _end_offset(part: dict, default: int = 0) -> int:
    if not part["tokens"]:
        return default
    return part["text_offset"][-1] + len(part["tokens"][-1])
