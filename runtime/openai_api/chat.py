"""``POST /v1/chat/completions``: messages through the chat template, tools, structured output,
chat-shaped logprobs, streaming deltas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from radixlm.runtime.errors import InvalidRequestError
from radixlm.runtime.http_server import cancel_on_disconnect, start_stream
from radixlm.runtime.openai_api import common, streams
from radixlm.runtime.openai_api.chat_prompt import read_messages, render_prompt
from radixlm.runtime.openai_api.fields import (
    MAX_TOP_LOGPROBS,
    Fields,
    check_logit_bias,
    read_n,
    read_stream,
    sampling_values,
    to_sampling_params,
)
from radixlm.runtime.openai_api.logprobs import chat_logprobs
from radixlm.runtime.openai_api.response_format import add_json_schema, json_schema_of
from radixlm.runtime.openai_api.tools import (
    ToolCall,
    ToolCallStream,
    ToolSpec,
    parse_tool_calls,
    read_tools,
)
from radixlm.runtime.tokenizer_manager import RequestState


@dataclass(frozen=True)
class ChatCall:
    messages: list[dict[str, Any]]
    tools: ToolSpec
    n: int
    stream: bool
    include_usage: bool
    logprobs: bool
    top_logprobs: int
    max_tokens: int | None  # None: whatever the context leaves
    sampling: dict[str, Any]  # SamplingParams keys, without max_new_tokens
    constraint_field: str  # the field a bad constraint is blamed on


def parse_chat(body: Any, vocab_size: int) -> ChatCall:
    fields = Fields(body)
    messages = read_messages(fields.get("messages"))
    tools = read_tools(fields.get("tools"), fields.get("tool_choice"))
    fields.boolean("parallel_tool_calls", True)
    stream, include_usage = read_stream(fields)
    logprobs = fields.boolean("logprobs", False)
    top_logprobs = fields.integer("top_logprobs", 0, minimum=0, maximum=MAX_TOP_LOGPROBS)
    if top_logprobs and not logprobs:
        raise InvalidRequestError("top_logprobs requires logprobs to be true", "top_logprobs")
    max_tokens = fields.integer("max_tokens", None, minimum=1)
    max_tokens = fields.integer("max_completion_tokens", max_tokens, minimum=1)
    sampling = sampling_values(fields)
    check_logit_bias(sampling, vocab_size)
    schema = json_schema_of(fields.get("response_format"))
    forced = tools.constraint_schema() if tools.enabled else None
    constraint_field = "response_format"
    if forced is not None:
        if schema is not None or "regex" in sampling or "ebnf" in sampling:
            raise InvalidRequestError(
                "tool_choice required or a named function cannot be combined with "
                "response_format, regex or ebnf",
                "tool_choice",
            )
        schema, constraint_field = forced, "tools"
    add_json_schema(sampling, schema, constraint_field)
    return ChatCall(
        messages=messages,
        tools=tools,
        n=read_n(fields),
        stream=stream,
        include_usage=include_usage,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        max_tokens=max_tokens,
        sampling=sampling,
        constraint_field=constraint_field,
    )


async def create_chat_completion(
    ctx: common.ServingContext, request: Request, body: Any
) -> Response:
    call = parse_chat(body, ctx.manager.vocab_size)
    common.check_model(ctx, body.get("model"))
    common.check_batch_size(call.n)
    tokenizer = ctx.manager.tokenizer
    prompt = render_prompt(
        tokenizer, call.messages, call.tools.tools if call.tools.enabled else None
    )
    # The template already wrote every special token the model expects.
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    if not ids:
        raise InvalidRequestError("messages render to an empty prompt", "messages")
    max_new = common.check_context(ctx, len(ids), call.max_tokens, "messages", "messages")
    params = to_sampling_params({**call.sampling, "max_new_tokens": max_new})
    rid = common.new_id("chatcmpl")
    requests = common.choice_requests(
        ctx,
        ids,
        params,
        call.n,
        rid,
        constraint_field=call.constraint_field,
        stream=call.stream,
        return_logprob=call.logprobs,
        top_logprobs_num=call.top_logprobs,
    )
    states = ctx.manager.submit_many(requests)
    if call.stream:
        return await start_stream(_chunks(ctx, call, rid, states), request)
    done = await cancel_on_disconnect(request, streams.run_to_end(ctx.manager, states))
    if isinstance(done, Response):
        return done
    return JSONResponse(
        {
            "id": rid,
            "object": "chat.completion",
            "created": common.now_s(),
            "model": ctx.served_model_name,
            "choices": [_choice_json(ctx, call, i, s) for i, s in enumerate(states)],
            "usage": common.usage(states[:1], states),
        }
    )


def _choice_json(ctx: common.ServingContext, call: ChatCall, index: int, state: RequestState):
    content: str | None = state.text
    calls: list[ToolCall] = []
    if call.tools.enabled:
        content, calls = parse_tool_calls(state.text, call.tools.names)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [c.to_json() for c in calls]
    return {
        "index": index,
        "message": message,
        "logprobs": _logprobs(ctx, call, state, 0) if call.logprobs else None,
        "finish_reason": "tool_calls" if calls else common.finish_reason(state.last.finish),
    }


def _logprobs(ctx: common.ServingContext, call: ChatCall, state: RequestState, start: int):
    end = common.visible_logprob_count(state)
    tops = state.output_top_logprobs[start:end] if call.top_logprobs else None
    return chat_logprobs(ctx.token_texts, state.output_logprobs[start:end], tops)


class _ChoiceStream:
    """What one choice has streamed so far."""

    def __init__(self, call: ChatCall, state: RequestState) -> None:
        self.call = call
        self.state = state
        self.sent_text = 0
        self.sent_logprobs = 0
        self.tool_calls = ToolCallStream(call.tools.names) if call.tools.enabled else None

    def delta(self, ctx: common.ServingContext, index: int, final: bool) -> dict | None:
        """The choice's next chunk entry, or None when there is nothing new to say."""
        text, calls = self._new_text(final)
        delta: dict[str, Any] = {}
        if text:
            delta["content"] = text
        if calls:
            delta["tool_calls"] = [{"index": k, **c.to_json()} for k, c in enumerate(calls)]
        logprobs = None
        if self.call.logprobs:
            logprobs = _logprobs(ctx, self.call, self.state, self.sent_logprobs)
            self.sent_logprobs += len(logprobs["content"])
        reason = None
        if final:
            reason = "tool_calls" if calls else common.finish_reason(self.state.last.finish)
        if not delta and reason is None and not (logprobs and logprobs["content"]):
            return None
        return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason}

    def _new_text(self, final: bool) -> tuple[str, list[ToolCall]]:
        text = self.state.text
        if self.tool_calls is not None:
            return self.tool_calls.feed(text, final)
        delta = text[self.sent_text :]
        self.sent_text = len(text)
        return delta, []


async def _chunks(
    ctx: common.ServingContext, call: ChatCall, rid: str, states: list[RequestState]
) -> AsyncIterator[dict]:
    choices = [_ChoiceStream(call, s) for s in states]

    chunk = common.chunk_maker(ctx, rid, "chat.completion.chunk", call.include_usage)

    role_sent = False
    async for index, update in streams.merged_updates(ctx.manager, states):
        failure = streams.failure_of(update)
        if failure is not None:
            raise failure
        if not role_sent:
            # Sent once the first update shows the request was accepted: errors stay 4xx.
            role_sent = True
            for i in range(len(states)):
                yield chunk([_role_entry(i)])
        entry = choices[index].delta(ctx, index, final=update.finish is not None)
        if entry is not None:
            yield chunk([entry])
    if call.include_usage:
        yield chunk([], common.usage(states[:1], states))


def _role_entry(index: int) -> dict:
    return {
        "index": index,
        "delta": {"role": "assistant", "content": ""},
        "logprobs": None,
        "finish_reason": None,
    }
