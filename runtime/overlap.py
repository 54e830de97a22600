"""Overlapped decode: queue pass N+1 on the GPU before reading pass N's sampled tokens.

Without it a decode step is serial: the GPU waits while the host applies the last tokens (finish
checks, output messages) and builds the next batch, then the host waits for the GPU. Here the
scheduler launches pass N+1 first and applies pass N's tokens while N+1 runs (SGLang's overlap
scheduler, simplified to decode passes):

- pass N+1's input token of a request still in flight is a placeholder ``-(i + 1)``, ``i`` its
  row in pass N; ``resolve_placeholders`` swaps in pass N's sampled ids on the device. Positions,
  KV slots and lengths never depend on token values, so the host knows everything else.
- a request that pass N finishes (EOS, stop) has already been fed to pass N+1: that pass writes
  the K/V of its last token (valid, and cached with it) and samples one token nobody reads.
  Requests that certainly finish by length are left out of pass N+1.
- only requests whose sampling does not read the host's view of the output qualify (no grammar,
  no penalties, no logprobs, past min_new_tokens); any other step first drains the pass in flight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from radixlm.runtime import sampler
from radixlm.runtime.forward_batch import ForwardMode, build_forward_batch
from radixlm.runtime.request import Req


@dataclass
class InFlightDecode:
    """A launched decode pass whose sampled tokens the host has not read yet."""

    reqs: list[Req]
    next_ids: torch.Tensor  # (batch,) int64 on the device: the pass's sampled tokens
    host_ids: torch.Tensor  # (batch,) int64 on the CPU (pinned on CUDA), filled asynchronously
    done: torch.cuda.Event | None  # recorded after the copy to host_ids (None on CPU)

    def read(self) -> list[int]:
        if self.done is not None:
            self.done.synchronize()
        return self.host_ids.tolist()


def can_overlap(req: Req) -> bool:
    """True if sampling this request's next token needs nothing the host learns from the
    previous pass's token (the host's output lags the device's by up to one token)."""
    params = req.params
    return (
        req.grammar is None
        and req.sampling_state.penalty_tokens is None
        and not req.request.return_logprob
        and len(req.output_ids) >= params.min_new_tokens  # no EOS ban, even one token behind
    )


def finishes_by_length(req: Req, in_flight: bool, context_len: int) -> bool:
    """True if the token in flight (if any) is certain to end the request by a length limit."""
    num_out = len(req.output_ids) + in_flight
    return num_out >= req.params.max_new_tokens or len(req.input_ids) + num_out >= context_len


def launch_decode(
    batch_runner,  # radixlm.runtime.batch_runner.BatchRunner
    reqs: list[Req],
    prefix_lens: list[int],
    slots: list[int],
    tokens: list[int],
    previous: InFlightDecode | None,
) -> InFlightDecode:
    """Runs one decode pass of ``reqs`` (one new token each after ``prefix_lens`` cached ones,
    K/V at ``slots``) and samples, without reading anything back. ``tokens``: each request's
    input token, or a placeholder ``-(i + 1)`` for row ``i`` of ``previous``. The caller has
    already counted the new token in each ``kv_len``."""
    batch = build_forward_batch(
        ForwardMode.DECODE,
        [[t] for t in tokens],
        prefix_lens,
        [r.req_pool_idx for r in reqs],
        slots,
        device=batch_runner.device,
    )
    if previous is not None:
        resolve_placeholders(batch.input_ids, previous.next_ids)
    logits = batch_runner.model_runner.forward(batch)
    next_ids = sampler.sample_ids(logits, [r.sampling_state for r in reqs])
    if next_ids.device.type == "cuda":
        host_ids = torch.empty(next_ids.shape, dtype=torch.int64, pin_memory=True)
        host_ids.copy_(next_ids, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
    else:
        host_ids, done = next_ids, None
    return InFlightDecode(reqs=reqs, next_ids=next_ids, host_ids=host_ids, done=done)


def resolve_placeholders(input_ids: torch.Tensor, previous_ids: torch.Tensor) -> None:
    """In place: every ``-(i + 1)`` in ``input_ids`` becomes ``previous_ids[i]``; on the device,
    without a sync."""
    rows = (-input_ids - 1).clamp_(0, previous_ids.shape[0] - 1)
    input_ids.copy_(torch.where(input_ids < 0, previous_ids[rows], input_ids))
