"""Collects per-request token updates for the detokenizer after each scheduler step."""

from __future__ import annotations

from radixlm.runtime.io_struct import TokenUpdate
from radixlm.runtime.request import Req


class OutputBuilder:
    """Streaming requests get an update every ``stream_interval`` tokens; others only at the end."""

    def __init__(self, stream_interval: int = 1) -> None:
        self.stream_interval = stream_interval
        self._dirty: dict[str, Req] = {}

    def add(self, req: Req) -> None:
        self._dirty[req.rid] = req

    def drain(self) -> list[TokenUpdate]:
        updates = []
        for req in self._dirty.values():
            update = self._update_for(req)
            if update is not None:
                updates.append(update)
        self._dirty.clear()
        return updates

    def _update_for(self, req: Req) -> TokenUpdate | None:
        finished = req.finish is not None
        new_count = len(req.output_ids) - req.num_sent_output
        if not finished:
            if not req.request.stream or new_count < self.stream_interval:
                return None
        first = req.num_sent_output == 0 and not req.input_logprobs_sent
        start = req.num_sent_output
        req.num_sent_output = len(req.output_ids)
        send_input_logprobs = (
            req.request.return_logprob
            and not req.input_logprobs_sent
            and (finished or not req.in_prefill)
        )
        if send_input_logprobs:
            req.input_logprobs_sent = True
        params = req.params
        return TokenUpdate(
            rid=req.rid,
            new_output_ids=req.output_ids[start:],
            completion_tokens=len(req.output_ids),
            prompt_tokens=len(req.input_ids),
            cached_tokens=req.cached_tokens,
            finish=req.finish,
            stop=params.stop if first else (),
            no_stop_trim=params.no_stop_trim,
            skip_special_tokens=params.skip_special_tokens,
            new_output_logprobs=req.output_logprobs[start:] if req.request.return_logprob else [],
            new_output_top_logprobs=(
                req.output_top_logprobs[start:] if req.request.top_logprobs_num else []
            ),
            input_logprobs=req.input_logprobs if send_input_logprobs else None,
            input_top_logprobs=(
                req.input_top_logprobs
                if send_input_logprobs and req.request.top_logprobs_num
                else None
            ),
            jump_forward_tokens=req.jump_forward_tokens,
        )
