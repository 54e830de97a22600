"""Typed messages between processes (msgspec structs, tagged; never pickle).

Direction:  tokenizer manager -> scheduler -> detokenizer -> tokenizer manager.
Control replies from the scheduler travel through the detokenizer unchanged.
"""

from __future__ import annotations

import msgspec

from radixlm.runtime.sampling_params import SamplingParams

# A logprob entry as SGLang returns it, before text is attached: (logprob | None, token_id).
LogprobPair = tuple[float | None, int]


class Message(msgspec.Struct, tag=True, frozen=True, kw_only=True):
    """Base of every message; the class name is the wire tag."""


# ---- tokenizer manager -> scheduler -------------------------------------------------------------


class GenerateRequest(Message):
    rid: str
    input_ids: list[int]
    sampling: SamplingParams
    stream: bool = False
    return_logprob: bool = False
    # Input positions from which to return input logprobs; -1 = output logprobs only.
    logprob_start_len: int = -1
    top_logprobs_num: int = 0


class AbortRequest(Message):
    rid: str = ""
    abort_all: bool = False


class FlushCacheRequest(Message):
    request_id: str


class StateRequest(Message):
    """Asks the scheduler for its counters and a KV/radix invariant check."""

    request_id: str


class ShutdownRequest(Message):
    """Graceful stop: abort what is left after ``timeout_s`` and exit."""

    timeout_s: float = 0.0


# ---- scheduler -> detokenizer -------------------------------------------------------------------


class FinishReason(msgspec.Struct, frozen=True, kw_only=True):
    type: str  # "stop" | "length" | "abort"
    matched: str | int | None = None
    length: int | None = None
    message: str | None = None
    status_code: int | None = None

    def to_json(self) -> dict:
        out: dict = {"type": self.type}
        if self.type == "stop":
            out["matched"] = self.matched
        elif self.type == "length":
            out["length"] = self.length
        else:
            out["message"] = self.message
            if self.status_code is not None:
                out["status_code"] = self.status_code
        return out


class TokenUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """New tokens of one request since its previous update."""

    rid: str
    new_output_ids: list[int]
    completion_tokens: int
    prompt_tokens: int
    cached_tokens: int
    finish: FinishReason | None = None
    # Stop strings are matched on text by the detokenizer's trimming; it needs them per request.
    stop: tuple[str, ...] = ()
    no_stop_trim: bool = False
    skip_special_tokens: bool = True
    new_output_logprobs: list[LogprobPair] = []
    new_output_top_logprobs: list[list[LogprobPair]] = []
    # Sent once, with the first update of the request, when input logprobs were asked for.
    input_logprobs: list[LogprobPair] | None = None
    input_top_logprobs: list[list[LogprobPair]] | None = None
    jump_forward_tokens: int = 0


class TokenBatch(Message):
    updates: list[TokenUpdate]


class FlushCacheReply(Message):
    request_id: str
    success: bool
    message: str = ""


class StateReply(Message):
    request_id: str
    state: dict


# ---- detokenizer -> tokenizer manager -----------------------------------------------------------


class TextUpdate(msgspec.Struct, frozen=True, kw_only=True):
    rid: str
    text: str  # cumulative completion text, safe to show (stop strings trimmed or held back)
    new_output_ids: list[int]
    completion_tokens: int
    prompt_tokens: int
    cached_tokens: int
    finish: FinishReason | None = None
    new_output_logprobs: list[LogprobPair] = []
    new_output_top_logprobs: list[list[LogprobPair]] = []
    input_logprobs: list[LogprobPair] | None = None
    input_top_logprobs: list[list[LogprobPair]] | None = None
    jump_forward_tokens: int = 0


class TextBatch(Message):
    updates: list[TextUpdate]


ToScheduler = GenerateRequest | AbortRequest | FlushCacheRequest | StateRequest | ShutdownRequest
ToDetokenizer = TokenBatch | FlushCacheReply | StateReply
ToTokenizer = TextBatch | FlushCacheReply | StateReply
