"""SGLang's native `/generate` semantics on top of the tokenizer manager (shared by the HTTP
server and the in-process Engine): response JSON with `text`, `output_ids` and `meta_info`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from radixlm.runtime.generate_request import ParsedGenerate, ParsedRequest
from radixlm.runtime.tokenizer_manager import RequestState, TokenizerManager


class RequestFailedError(Exception):
    """A request finished with an abort carrying an HTTP status (e.g. 400 for a bad grammar)."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def submit_all(manager: TokenizerManager, parsed: ParsedGenerate) -> list[RequestState]:
    """Validates every request first and admits the batch whole or not at all, so a bad or
    refused item never leaves earlier items running with nobody waiting for them."""
    checked = [(r, manager.check_request(r)) for r in parsed.requests]
    return manager.submit_many(checked)


async def generate(manager: TokenizerManager, parsed: ParsedGenerate) -> dict | list[dict]:
    states = submit_all(manager, parsed)
    results = await asyncio.gather(*(_run_to_end(manager, s) for s in states))
    failed = next((r for r in results if isinstance(r, RequestFailedError)), None)
    if failed is not None and (not parsed.is_batch or failed.status_code == 400):
        raise failed
    outputs = [r if isinstance(r, dict) else _error_item(r) for r in results]
    return outputs if parsed.is_batch else outputs[0]


async def _run_to_end(manager: TokenizerManager, state: RequestState) -> dict | RequestFailedError:
    async for _ in manager.updates(state):
        pass
    return _result_or_error(manager, state)


def _result_or_error(manager: TokenizerManager, state: RequestState) -> dict | RequestFailedError:
    finish = state.last.finish
    if finish.type == "abort" and finish.status_code in (400, 500, 503):
        return RequestFailedError(finish.message or "request failed", finish.status_code)
    return response_json(manager, state)


def _error_item(error: RequestFailedError) -> dict:
    return {"error": {"message": error.message, "code": error.status_code}}


async def generate_stream(
    manager: TokenizerManager, parsed: ParsedGenerate, incremental: bool = False
) -> AsyncIterator[dict]:
    """Yields one event per update: cumulative `text` (or deltas with ``incremental``)."""
    (state,) = submit_all(manager, parsed)
    sent_text, sent_ids, sent_lp = 0, 0, 0
    async for update in manager.updates(state):
        finish = update.finish
        if finish is not None and finish.type == "abort" and finish.status_code == 400:
            raise RequestFailedError(finish.message or "invalid request", 400)
        event = response_json(manager, state)
        if incremental:
            event["text"] = state.text[sent_text:]
            event["output_ids"] = state.output_ids[sent_ids:]
            if "output_token_logprobs" in event["meta_info"]:
                event["meta_info"]["output_token_logprobs"] = event["meta_info"][
                    "output_token_logprobs"
                ][sent_lp:]
            sent_text, sent_ids, sent_lp = (
                len(state.text),
                len(state.output_ids),
                len(state.output_logprobs),
            )
        yield event


def response_json(manager: TokenizerManager, state: RequestState) -> dict[str, Any]:
    request: ParsedRequest = state.request
    update = state.last
    meta: dict[str, Any] = {
        "id": request.rid,
        "prompt_tokens": update.prompt_tokens,
        "completion_tokens": update.completion_tokens,
        "cached_tokens": update.cached_tokens,
        "finish_reason": update.finish.to_json() if update.finish is not None else None,
        "e2e_latency": time.monotonic() - state.created,
        "jump_forward_tokens": update.jump_forward_tokens,
    }
    if request.return_logprob:
        with_text = request.return_text_in_logprobs
        triples = _triples(manager, with_text)
        meta["input_token_logprobs"] = triples(state.input_logprobs or [])
        meta["output_token_logprobs"] = triples(state.output_logprobs)
        meta["output_token_logprobs_length"] = len(state.output_logprobs)
        if request.top_logprobs_num:
            meta["input_top_logprobs"] = [
                triples(row) if row else None for row in (state.input_top_logprobs or [])
            ]
            meta["output_top_logprobs"] = [triples(row) for row in state.output_top_logprobs]
    return {"text": state.text, "output_ids": list(state.output_ids), "meta_info": meta}


def _triples(manager: TokenizerManager, with_text: bool):
    token_text = manager.tokenizer.token_text

    def convert(pairs) -> list[list]:
        return [[lp, tid, token_text(tid) if with_text else None] for lp, tid in pairs]

    return convert
