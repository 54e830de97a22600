"""Runs one scheduled pass: forward, input logprobs, sampling under masks, jump-forward, finish.

The scheduler decides *who* runs and has already placed KV slots for the pass's tokens in each
request's ``req_to_token`` row; this module turns the pass into a ForwardBatch and applies the
results to the requests.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from radixlm.constrained import GrammarError
from radixlm.runtime import sampler
from radixlm.runtime.forward_batch import ForwardMode, build_forward_batch
from radixlm.runtime.io_struct import FinishReason, GenerateRequest
from radixlm.runtime.request import Req
from radixlm.runtime.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


class BatchRunner:
    def __init__(
        self,
        model_runner,  # radixlm.runtime.model_runner.ModelRunner
        tokenizer: Tokenizer,
        eos_token_ids: Sequence[int],
        context_len: int,
        vocab_size: int,
        enable_jump_forward: bool = True,
    ) -> None:
        self.model_runner = model_runner
        self.tokenizer = tokenizer
        self.eos_token_ids = frozenset(eos_token_ids)
        self.context_len = context_len
        self.vocab_size = vocab_size
        self.enable_jump_forward = enable_jump_forward
        self.device = model_runner.device

    def new_req(self, request: GenerateRequest) -> Req:
        state = sampler.make_state(request.sampling, request.input_ids)
        return Req(
            rid=request.rid,
            input_ids=list(request.input_ids),
            request=request,
            sampling_state=state,
        )

    # ---- the pass ---------------------------------------------------------------------------

    def run(self, chosen: list[tuple[Req, int]], slots: list[int]) -> None:
        """``slots``: the KV slots of the pass's new tokens, request after request."""
        new_ids, prefix_lens, rows = [], [], []
        logits_indices: list[int] = []
        sample_reqs: list[tuple[Req, int]] = []  # (request, row in logits)
        input_lp: list[tuple[Req, list[int], int]] = []  # (request, positions, first logits row)
        flat = 0
        for req, n in chosen:
            start = req.kv_len
            ids = req.token_range(start, start + n)
            new_ids.append(ids)
            prefix_lens.append(start)
            rows.append(req.req_pool_idx)
            if req.wants_input_logprobs:
                s, last = req.request.logprob_start_len, len(req.input_ids) - 2
                positions = [p for p in range(start, start + n) if s <= p <= last]
                if positions:
                    input_lp.append((req, positions, len(logits_indices)))
                    logits_indices.extend(flat + p - start for p in positions)
            completes = start + n == req.num_tokens
            if completes and req.remaining_new_tokens > 0:
                sample_reqs.append((req, len(logits_indices)))
                logits_indices.append(flat + n - 1)
            flat += n
        all_single = all(len(ids) == 1 for ids in new_ids) and all(
            not r.in_prefill for r, _ in chosen
        )
        mode = ForwardMode.DECODE if all_single else ForwardMode.EXTEND
        if not logits_indices:
            logits_indices = [flat - 1]  # the runner always wants at least one row
        batch = build_forward_batch(
            mode,
            new_ids,
            prefix_lens,
            rows,
            slots,
            logits_indices,
            device=self.device,
            prompt_lens=[len(req.input_ids) for req, _ in chosen],
        )
        logits = self.model_runner.forward(batch)
        for req, n in chosen:
            req.kv_len += n
        self._record_input_logprobs(logits, input_lp)
        if sample_reqs:
            self._sample(logits, sample_reqs)
        for req, _ in chosen:
            if req.finish is None and not req.in_prefill and req.params.max_new_tokens == 0:
                req.finish_with(FinishReason(type="length", length=0))

    def _record_input_logprobs(self, logits: torch.Tensor, input_lp) -> None:
        for req, positions, first_row in input_lp:
            top_k = req.request.top_logprobs_num
            all_ids = req.all_ids
            if not req.input_logprobs:
                s = req.request.logprob_start_len
                req.input_logprobs.append((None, all_ids[s]))
                if top_k:
                    req.input_top_logprobs.append([])
            targets = torch.tensor(
                [all_ids[p + 1] for p in positions], dtype=torch.int64, device=logits.device
            )
            rows = logits[first_row : first_row + len(positions)]
            values, top = sampler.token_logprobs(rows, targets, top_k)
            for i, p in enumerate(positions):
                req.input_logprobs.append((values[i], all_ids[p + 1]))
                if top_k:
                    req.input_top_logprobs.append(_as_pairs(top[i]))

    def _sample(self, logits: torch.Tensor, sample_reqs: list[tuple[Req, int]]) -> None:
        sample_reqs, masks = self._grammar_masks(sample_reqs)
        if not sample_reqs:
            return
        reqs = [r for r, _ in sample_reqs]
        rows = [row for _, row in sample_reqs]
        # A decode pass samples every logits row in order: no gather (and no index upload).
        same_rows = len(rows) == logits.shape[0] and rows[-1] == len(rows) - 1
        row_logits = logits if same_rows else logits[rows]
        banned = [self._banned_ids(r) for r in reqs]
        top_n = max(
            (r.request.top_logprobs_num for r in reqs if r.request.return_logprob), default=0
        )
        out = sampler.sample(
            row_logits,
            [r.sampling_state for r in reqs],
            allowed_masks=masks,
            banned_eos=banned if any(banned) else None,
            top_logprobs_num=top_n,
            return_logprobs=any(r.request.return_logprob for r in reqs),
        )
        for i, req in enumerate(reqs):
            token = out.next_token_ids[i]
            top = _as_pairs(out.top_logprobs[i][: req.request.top_logprobs_num]) if top_n else []
            logprob = out.logprobs[i] if out.logprobs else None  # read only if return_logprob
            try:
                self._append(req, [token], [(logprob, token)], [top])
                if req.finish is None and req.grammar is not None and self.enable_jump_forward:
                    self._jump_forward(req)
            except Exception as exc:  # a grammar's fault fails its own request, not the pass
                _fail(req, exc)

    def _grammar_masks(
        self, sample_reqs: list[tuple[Req, int]]
    ) -> tuple[list[tuple[Req, int]], torch.Tensor | None]:
        """The rows to sample and their allowed-token masks (None: no grammar among them). A
        request whose grammar fails or allows no token at all is failed and left out, so the
        rest of the batch samples as usual."""
        if not any(r.grammar is not None for r, _ in sample_reqs):
            return sample_reqs, None
        masks = np.ones((len(sample_reqs), self.vocab_size), dtype=np.bool_)
        kept: list[int] = []
        for i, (req, _) in enumerate(sample_reqs):
            if req.grammar is not None:
                masks[i] = False
                try:
                    req.grammar.fill_allowed_mask(masks[i])
                    if not masks[i].any():
                        raise GrammarError("the grammar allows no next token")
                except Exception as exc:
                    _fail(req, exc)
                    continue
            kept.append(i)
        if len(kept) < len(sample_reqs):
            sample_reqs, masks = [sample_reqs[i] for i in kept], masks[kept]
        return sample_reqs, torch.from_numpy(masks).to(self.device)

    def _banned_ids(self, req: Req) -> list[int]:
        params = req.params
        if len(req.output_ids) >= params.min_new_tokens:
            return []
        return sorted(self.eos_token_ids | set(params.stop_token_ids))

    def _jump_forward(self, req: Req) -> None:
        forced = req.grammar.jump_forward_tokens()[: req.remaining_new_tokens]
        if not forced:
            return
        req.jump_forward_tokens += len(forced)
        # Forced tokens have probability one under the constrained distribution.
        self._append(req, forced, [(0.0, t) for t in forced], [[] for _ in forced], advance=True)

    # ---- output and finish --------------------------------------------------------------------

    def append_sampled(self, req: Req, token: int) -> None:
        """Applies one token sampled by an overlapped decode pass (runtime/overlap.py): such
        requests have no grammar and want no logprobs, so this is ``_sample``'s per-request
        tail without them."""
        self._append(req, [token], [(None, token)], [[]])

    def _append(self, req: Req, tokens: list[int], logprobs, tops, advance: bool = False) -> None:
        for i, token in enumerate(tokens):
            if req.grammar is not None:
                req.grammar.accept_token(token)
            req.output_ids.append(token)
            req.sampling_state.output_ids.append(token)
            if req.request.return_logprob:
                req.output_logprobs.append(logprobs[i])
                if req.request.top_logprobs_num:
                    req.output_top_logprobs.append(tops[i])
            reason = self._finish_reason(req, token, num_new=i + 1)
            if reason is not None:
                req.finish_with(reason)
                return

    def _finish_reason(self, req: Req, token: int, num_new: int) -> FinishReason | None:
        params = req.params
        num_out = len(req.output_ids)
        if num_out >= params.min_new_tokens:
            if not params.ignore_eos and token in self.eos_token_ids:
                return FinishReason(type="stop", matched=token)
            if token in params.stop_token_ids:
                return FinishReason(type="stop", matched=token)
            if req.grammar is not None and req.grammar.is_terminated():
                return FinishReason(type="stop", matched=None)
            matched = self._matched_stop_string(req, num_new)
            if matched is not None:
                return FinishReason(type="stop", matched=matched)
        elif req.grammar is not None and req.grammar.is_terminated():
            # The grammar outranks min_new_tokens (as it outranks the EOS ban): nothing may follow.
            eos = token in self.eos_token_ids
            return FinishReason(type="stop", matched=token if eos else None)
        if num_out >= params.max_new_tokens:
            return FinishReason(type="length", length=params.max_new_tokens)
        if len(req.input_ids) + num_out >= self.context_len:
            return FinishReason(type="length", length=num_out)
        return None

    def _matched_stop_string(self, req: Req, num_new: int) -> str | None:
        stops = req.params.stop
        if not stops:
            return None
        # Enough trailing tokens to cover the longest stop string (a token is >= 1 byte).
        window = 4 * max(len(s) for s in stops) + num_new + 2
        tail = self.tokenizer.decode(req.output_ids[-window:], req.params.skip_special_tokens)
        for stop in stops:
            if stop in tail:
                return stop
        return None


def _fail(req: Req, exc: Exception) -> None:
    logger.error("request %s failed in sampling: %s", req.rid, exc, exc_info=exc)
    req.finish_with(FinishReason(type="abort", status_code=500, message=f"internal error: {exc}"))


def _as_pairs(top: list[tuple[int, float]]) -> list[tuple[float, int]]:
    """The sampler's (token id, logprob) -> SGLang's (logprob, token id) order."""
    return [(logprob, token_id) for token_id, logprob in top]
