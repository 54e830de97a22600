"""The detokenizer process: token ids from the scheduler -> text for the tokenizer manager."""

from __future__ import annotations

import json
import logging

import zmq

from radixlm.runtime import ipc
from radixlm.runtime.incremental_detokenizer import DecodeState
from radixlm.runtime.io_struct import FinishReason, TextBatch, TextUpdate, TokenBatch, TokenUpdate
from radixlm.runtime.process_utils import die_with_parent, setup_logging
from radixlm.runtime.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


class Detokenizer:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.states: dict[str, DecodeState] = {}

    def convert(self, update: TokenUpdate) -> TextUpdate:
        state = self.states.get(update.rid)
        if state is None:
            state = DecodeState(
                self.tokenizer, update.stop, update.no_stop_trim, update.skip_special_tokens
            )
            self.states[update.rid] = state
        finished = update.finish is not None
        new_ids = update.new_output_ids
        if (
            finished
            and not state.no_stop_trim
            and isinstance(update.finish.matched, int)
            and new_ids
        ):
            # A stop token id is part of output_ids but not of the text (SGLang trims it too).
            new_ids = new_ids[:-1]
        state.append(new_ids, final=finished)
        text = state.visible_text(finished)
        if finished:
            del self.states[update.rid]
        return TextUpdate(
            rid=update.rid,
            text=text,
            new_output_ids=update.new_output_ids,
            completion_tokens=update.completion_tokens,
            prompt_tokens=update.prompt_tokens,
            cached_tokens=update.cached_tokens,
            finish=update.finish,
            new_output_logprobs=update.new_output_logprobs,
            new_output_top_logprobs=update.new_output_top_logprobs,
            input_logprobs=update.input_logprobs,
            input_top_logprobs=update.input_top_logprobs,
            jump_forward_tokens=update.jump_forward_tokens,
        )


def run_detokenizer(tokenizer_dir: str, endpoints_json: str, log_level: str, ready_conn) -> None:
    """Process entry: one loop, blocking on the scheduler's messages."""
    die_with_parent()
    setup_logging(log_level, "detokenizer")
    endpoints = ipc.IpcEndpoints(**json.loads(endpoints_json))
    context = zmq.Context()
    inbox = ipc.detokenizer_inbox(context, endpoints)
    to_tokenizer = ipc.outbox(context, endpoints.to_tokenizer)
    detokenizer = Detokenizer(Tokenizer(tokenizer_dir))
    ready_conn.send_bytes(b"{}")
    while True:
        message = inbox.recv_valid()
        if isinstance(message, TokenBatch):
            updates = []
            for update in message.updates:
                try:
                    updates.append(detokenizer.convert(update))
                except Exception:  # a decoding bug fails this request only, never the loop
                    logger.exception("detokenization failed for request %s", update.rid)
                    detokenizer.states.pop(update.rid, None)
                    updates.append(_failed(update))
            to_tokenizer.send(TextBatch(updates=updates))
        else:
            to_tokenizer.send(message)


def _failed(update: TokenUpdate) -> TextUpdate:
    return TextUpdate(
        rid=update.rid,
        text="",
        new_output_ids=update.new_output_ids,
        completion_tokens=update.completion_tokens,
        prompt_tokens=update.prompt_tokens,
        cached_tokens=update.cached_tokens,
        finish=FinishReason(type="abort", message="detokenization failed", status_code=500),
    )
