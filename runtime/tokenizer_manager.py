"""The tokenizer manager (in the HTTP process): validate -> tokenize -> send to the scheduler,
then gather the detokenizer's text updates per request. asyncio; never imports torch."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from radixlm.runtime import ipc
from radixlm.runtime.errors import InvalidRequestError
from radixlm.runtime.generate_request import ParsedRequest
from radixlm.runtime.io_struct import (
    AbortRequest,
    FlushCacheReply,
    FlushCacheRequest,
    GenerateRequest,
    ShutdownRequest,
    StateReply,
    StateRequest,
    TextBatch,
    TextUpdate,
    ToTokenizer,
)
from radixlm.runtime.metrics import RequestTiming, ServerMetrics
from radixlm.runtime.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


class ServerOverloadedError(Exception):
    """The request queue is full (answered with 503 + Retry-After)."""


@dataclass
class RequestState:
    """What the client has been sent so far for one request, accumulated from text updates."""

    request: ParsedRequest
    prompt_ids: list[int]
    created: float = field(default_factory=time.monotonic)
    text: str = ""
    output_ids: list[int] = field(default_factory=list)
    updates: asyncio.Queue = field(default_factory=asyncio.Queue)
    last: TextUpdate | None = None
    output_logprobs: list = field(default_factory=list)
    output_top_logprobs: list = field(default_factory=list)
    input_logprobs: list | None = None
    input_top_logprobs: list | None = None
    finished: bool = False
    timing: RequestTiming = field(default_factory=RequestTiming)


class TokenizerManager:
    def __init__(
        self,
        tokenizer: Tokenizer,
        endpoints: ipc.IpcEndpoints,
        context_len: int,
        vocab_size: int,
        max_inflight_requests: int | None = None,
        validate_grammar=None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.context_len = context_len
        self.vocab_size = vocab_size
        self.max_inflight_requests = max_inflight_requests
        self.validate_grammar = validate_grammar
        self.metrics = metrics
        self._async_context = zmq.asyncio.Context()
        self._inbox = ipc.tokenizer_inbox(self._async_context, endpoints)
        # Sends never block (PUSH to a live peer), so the outbox can be a plain socket.
        self._sync_context = zmq.Context()
        self._to_scheduler = ipc.outbox(self._sync_context, endpoints.to_scheduler)
        self._states: dict[str, RequestState] = {}
        self._control: dict[str, asyncio.Future] = {}
        self._loop_task: asyncio.Task | None = None
        self.accepting = True

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._receive_loop())

    def close(self) -> None:
        """Closes the sockets; an unclosed socket makes the context's finalizer block forever."""
        if self._loop_task is not None:
            self._loop_task.cancel()
        self._async_context.destroy(linger=0)
        self._sync_context.destroy(linger=0)

    async def _receive_loop(self) -> None:
        while True:
            frame = await self._inbox.socket.recv(copy=False)
            message: ToTokenizer = self._inbox.decode(frame.buffer)
            if isinstance(message, TextBatch):
                for update in message.updates:
                    state = self._states.get(update.rid)
                    if state is not None:
                        state.updates.put_nowait(update)
            elif isinstance(message, (FlushCacheReply, StateReply)):
                future = self._control.pop(message.request_id, None)
                if future is not None and not future.done():
                    future.set_result(message)

    @property
    def num_inflight(self) -> int:
        return len(self._states)

    # ---- generation ------------------------------------------------------------------------

    def tokenize(self, request: ParsedRequest) -> list[int]:
        ids = (
            request.input_ids
            if request.input_ids is not None
            else self.tokenizer.encode(request.text)
        )
        field_name = "input_ids" if request.input_ids is not None else "text"
        if not ids:
            raise InvalidRequestError(f"{field_name} tokenizes to nothing", field_name)
        bad = next((t for t in ids if t >= self.vocab_size), None)
        if bad is not None:
            raise InvalidRequestError(
                f"input_ids contains token id {bad}, outside the vocabulary [0, {self.vocab_size})",
                "input_ids",
            )
        max_new = request.sampling.max_new_tokens
        if len(ids) + max_new > self.context_len:
            raise InvalidRequestError(
                f"This model's maximum context length is {self.context_len} tokens. However, you "
                f"requested {len(ids) + max_new} tokens ({len(ids)} in the prompt, {max_new} for "
                "the completion). Please reduce the prompt or max_new_tokens.",
                "sampling_params.max_new_tokens" if max_new else field_name,
            )
        if request.logprob_start_len >= len(ids):
            raise InvalidRequestError(
                f"logprob_start_len ({request.logprob_start_len}) must be smaller than the prompt "
                f"length ({len(ids)})",
                "logprob_start_len",
            )
        return ids

    def check_request(self, request: ParsedRequest) -> list[int]:
        """All edge validation of one request (raises InvalidRequestError); returns prompt ids."""
        ids = self.tokenize(request)
        if self.validate_grammar is not None:
            self.validate_grammar(request.sampling)
        return ids

    def _check_capacity(self, num_requests: int) -> None:
        if not self.accepting:
            self._count_rejected()
            raise ServerOverloadedError("the server is shutting down")
        if (
            self.max_inflight_requests is not None
            and self.num_inflight + num_requests > self.max_inflight_requests
        ):
            self._count_rejected()
            raise ServerOverloadedError("too many requests in the queue; retry later")

    def _count_rejected(self) -> None:
        if self.metrics is not None:
            self.metrics.count_rejected()

    def submit_many(self, items: list[tuple[ParsedRequest, list[int]]]) -> list[RequestState]:
        """Admits a group (the choices of one call) whole or not at all."""
        self._check_capacity(len(items))
        return [self.submit(request, ids) for request, ids in items]

    def submit(self, request: ParsedRequest, prompt_ids: list[int]) -> RequestState:
        self._check_capacity(1)
        if request.rid in self._states:
            raise InvalidRequestError(f"duplicate rid {request.rid!r}", "rid")
        state = RequestState(request=request, prompt_ids=prompt_ids)
        self._states[request.rid] = state
        self._send(
            GenerateRequest(
                rid=request.rid,
                input_ids=prompt_ids,
                sampling=request.sampling,
                stream=request.stream,
                return_logprob=request.return_logprob,
                logprob_start_len=request.logprob_start_len,
                top_logprobs_num=request.top_logprobs_num,
            )
        )
        return state

    async def updates(self, state: RequestState) -> AsyncIterator[TextUpdate]:
        """Yields the request's updates until it finishes; aborts it if the consumer goes away."""
        try:
            while not state.finished:
                update: TextUpdate = await state.updates.get()
                self._apply(state, update)
                yield update
        finally:
            self._states.pop(state.request.rid, None)
            if not state.finished:
                self.abort(state.request.rid)

    def _apply(self, state: RequestState, update: TextUpdate) -> None:
        state.last = update
        state.text = update.text
        state.output_ids.extend(update.new_output_ids)
        state.output_logprobs.extend(update.new_output_logprobs)
        state.output_top_logprobs.extend(update.new_output_top_logprobs)
        if update.input_logprobs is not None:
            state.input_logprobs = update.input_logprobs
            state.input_top_logprobs = update.input_top_logprobs
        state.finished = update.finish is not None
        if self.metrics is not None:
            finish_type = update.finish.type if update.finish is not None else None
            self.metrics.observe(state.timing, len(update.new_output_ids), finish_type)

    def abort(self, rid: str = "", abort_all: bool = False) -> None:
        self._send(AbortRequest(rid=rid, abort_all=abort_all))

    # ---- control ----------------------------------------------------------------------------

    async def _control_call(self, make, timeout_s: float = 30.0):
        request_id = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self._control[request_id] = future
        self._send(make(request_id))
        try:
            return await asyncio.wait_for(future, timeout_s)
        finally:
            self._control.pop(request_id, None)

    async def flush_cache(self) -> FlushCacheReply:
        return await self._control_call(lambda rid: FlushCacheRequest(request_id=rid))

    async def scheduler_state(self) -> dict[str, Any]:
        reply = await self._control_call(lambda rid: StateRequest(request_id=rid))
        return reply.state

    def shutdown_scheduler(self, timeout_s: float) -> None:
        self.accepting = False
        self._send(ShutdownRequest(timeout_s=timeout_s))

    def _send(self, message) -> None:
        self._to_scheduler.send(message)
