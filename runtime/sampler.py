"""Batched next-token sampling for one decode step.

Per row, in this order: logit_bias -> repetition_penalty (HF: over prompt + output tokens, divide
positive logits, multiply negative ones) -> frequency/presence penalties (OpenAI: over output
tokens) -> grammar mask (MASKED_LOGIT) and banned ids (-inf) -> exact argmax for greedy rows,
otherwise temperature -> top_k -> top_p (over the top_k-renormalised distribution, like HF and
vLLM) -> min_p -> one draw by inverse CDF.

Every step is vectorised across the batch and skipped when no row needs it; nothing sorts the
whole vocabulary (top_k uses topk, top_p an exact accept/redraw loop). A draw takes one uniform
number, drawn on the CPU from the row's own generator when it has a seed (else from torch's
global RNG), so a seeded row gets the same token for the same logits and history whatever else
is in the batch (up to ties between equal probabilities and float rounding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from radixlm.kernels.cpu_layer_ops import cpu_layer_ops_for
from radixlm.runtime.logprobs import TopLogprobs, token_logprobs
from radixlm.runtime.sampling_params import SamplingParams
from radixlm.runtime.sampling_penalties import (
    PenaltyTokens,
    apply_logit_bias,
    apply_penalties,
    float_tensor,
    long_tensor,
)

# Logit given to tokens the grammar forbids: far below any real logit at any temperature, and
# unlike -inf it never turns arithmetic (-inf - -inf) into NaN.
MASKED_LOGIT = -1e30

# Temperatures are applied as at most this: the distribution is uniform over the allowed tokens
# to within a percent already, masked tokens stay at MASKED_LOGIT / 1e4, and a larger value (the
# native API has no upper bound, like SGLang's) would overflow float32 and make the logits NaN.
_MAX_APPLIED_TEMPERATURE = 1e4

# Exponents up to about _EXP_FLOOR + ln 2 are treated as -inf when turning logits into
# unnormalised probabilities. exp(_EXP_FLOOR) is still a normal float32, and _EXP_FLOOR_CUT sits
# above it whatever the rounding of exp.
_EXP_FLOOR = -80.0
_EXP_FLOOR_CUT = 2.0 * math.exp(_EXP_FLOOR)

__all__ = [
    "MASKED_LOGIT",
    "SampleOutput",
    "SamplingRequestState",
    "make_state",
    "processed_logits",
    "sample",
    "sample_ids",
    "token_logprobs",
]


@dataclass(eq=False)
class SamplingRequestState:
    """What the sampler remembers about one running request (kept by the scheduler)."""

    params: SamplingParams
    # Generated tokens, sampled and forced alike; the scheduler appends to it.
    output_ids: list[int]
    # Created from params.sampling_seed; None draws from torch's global RNG.
    generator: torch.Generator | None
    # Tokens the penalties touch; None when the request has no repetition/frequency/presence
    # penalty.
    penalty_tokens: PenaltyTokens | None


def make_state(params: SamplingParams, prompt_ids: Sequence[int]) -> SamplingRequestState:
    generator = None
    if params.sampling_seed is not None:
        # torch seeds are unsigned 64-bit; fold any user integer into that range.
        generator = torch.Generator().manual_seed(params.sampling_seed % 2**64)
    penalty_tokens = None
    if params.repetition_penalty != 1.0:
        # The repetition penalty covers prompt tokens too; frequency/presence only the output.
        penalty_tokens = PenaltyTokens(prompt_ids)
    elif params.frequency_penalty != 0.0 or params.presence_penalty != 0.0:
        penalty_tokens = PenaltyTokens(())
    return SamplingRequestState(
        params=params, output_ids=[], generator=generator, penalty_tokens=penalty_tokens
    )


@dataclass
class SampleOutput:
    next_token_ids: list[int]
    # Logprob of each chosen token under the raw distribution log_softmax(logits); empty when
    # sample() was told no row wants them.
    logprobs: list[float]
    # Per row, the most likely (token id, raw logprob) pairs; empty lists unless asked for.
    top_logprobs: list[TopLogprobs]


def sample(
    logits: torch.Tensor,
    states: Sequence[SamplingRequestState],
    allowed_masks: torch.Tensor | None = None,
    banned_eos: Sequence[Sequence[int]] | None = None,
    top_logprobs_num: int = 0,
    return_logprobs: bool = True,
) -> SampleOutput:
    """Picks one next token per row.

    ``logits``: (batch, vocab) raw model logits. ``allowed_masks``: (batch, mask_vocab) bool with
    mask_vocab <= vocab, True = allowed; columns past mask_vocab (padding of the model's vocab)
    count as disallowed. ``banned_eos``: per row, ids to forbid this step (EOS and stop ids while
    the output is shorter than min_new_tokens). The grammar outranks the ban: a row whose grammar
    allows only banned ids samples among them. A row with no allowed token at all raises
    ValueError naming the rows. ``top_logprobs_num``: how many top raw logprobs per row to return.
    ``return_logprobs=False`` (and no top logprobs) skips the log-softmax over the vocabulary and
    its host transfer: ``logprobs`` is then empty, and reading the chosen ids is the step's only
    device sync.
    """
    batch = logits.shape[0]
    assert len(states) == batch, (len(states), batch)
    if batch == 0:
        return SampleOutput([], [], [])
    next_ids = sample_ids(logits, states, allowed_masks, banned_eos)
    if not return_logprobs and top_logprobs_num <= 0:
        return SampleOutput(next_ids.tolist(), [], [[] for _ in range(batch)])
    logprobs, top = token_logprobs(logits, next_ids, top_logprobs_num)
    return SampleOutput(next_ids.tolist(), logprobs, top)


def sample_ids(
    logits: torch.Tensor,
    states: Sequence[SamplingRequestState],
    allowed_masks: torch.Tensor | None = None,
    banned_eos: Sequence[Sequence[int]] | None = None,
) -> torch.Tensor:
    """``sample``'s choice as an int64 tensor on the logits' device, without reading it back:
    no device sync, so the overlapped decode can queue the next pass behind it. (A row with
    top_p < 1 still syncs: its accept/redraw loop reads how many rows were rejected.)"""
    batch = logits.shape[0]
    x = processed_logits(logits, states, allowed_masks, banned_eos)
    greedy = [i for i, s in enumerate(states) if s.params.is_greedy]
    sampled = [i for i, s in enumerate(states) if not s.params.is_greedy]
    if not sampled:
        # All greedy (the common serving case): no output buffer, no scatter.
        next_ids = _first_max(x)
    else:
        next_ids = torch.empty(batch, dtype=torch.long, device=x.device)
    if greedy and sampled:
        rows = _row_index(greedy, batch, x.device)
        _put(next_ids, rows, _first_max(_take(x, rows)))
    if sampled:
        rows = _row_index(sampled, batch, x.device)
        _put(next_ids, rows, _sample_rows(_take(x, rows), [states[i] for i in sampled]))
    return next_ids


def _first_max(x: torch.Tensor) -> torch.Tensor:
    """Each row's first maximum, like argmax (ties go to the lowest id, batch or not): the
    compiled loop on CPU, else ``max(dim)`` (twice as fast as argmax on CPU, and on GPU)."""
    ops = cpu_layer_ops_for(x) if x.dtype == torch.float32 else None
    if ops is not None and x.dim() == 2 and x.is_contiguous():
        return ops.argmax_rows(x)
    return x.max(dim=-1).indices


def processed_logits(
    logits: torch.Tensor,
    states: Sequence[SamplingRequestState],
    allowed_masks: torch.Tensor | None = None,
    banned_eos: Sequence[Sequence[int]] | None = None,
) -> torch.Tensor:
    """Float32 logits after logit_bias, penalties, grammar masks and bans, as ``sample`` applies
    them. Returns ``logits`` itself when no row needs any of them; never writes into it.
    Tokens the grammar forbids come out as MASKED_LOGIT, banned ids as -inf."""
    x = logits.float()
    owned = x is not logits
    if any(s.params.logit_bias or s.penalty_tokens is not None for s in states):
        if not owned:
            x, owned = x.clone(), True
        apply_logit_bias(x, states)
        apply_penalties(x, states)
    allowed = None
    if allowed_masks is not None:
        allowed = _full_width_mask(allowed_masks, x)
        # Bool tensors viewed as uint8: several times faster on CPU than bool kernels.
        allowed_u8 = allowed.view(torch.uint8)
        dead = allowed_u8.amax(dim=-1) == 0
        if bool(dead.any()):
            raise ValueError(f"no allowed token in batch rows {dead.nonzero().view(-1).tolist()}")
        # Adds 0 to allowed logits and MASKED_LOGIT to the rest; on CPU this is ~5x faster than
        # torch.where(allowed, x, -inf).
        x, owned = allowed_u8.to(torch.float32).sub_(1.0).mul_(-MASKED_LOGIT).add_(x), True
    if banned_eos is not None and any(banned_eos):
        if not owned:
            x = x.clone()
        _apply_bans(x, allowed, banned_eos)
    return x


def _full_width_mask(allowed_masks: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The grammar mask on x's device, widened to x's vocab: padding columns are disallowed."""
    batch, vocab = x.shape
    assert allowed_masks.dtype == torch.bool and allowed_masks.shape[0] == batch
    mask_vocab = allowed_masks.shape[1]
    assert mask_vocab <= vocab, (mask_vocab, vocab)
    allowed = allowed_masks.to(x.device)
    if mask_vocab < vocab:
        padding = torch.zeros(batch, vocab - mask_vocab, dtype=torch.bool, device=x.device)
        allowed = torch.cat([allowed, padding], dim=1)
    return allowed


def _apply_bans(
    x: torch.Tensor, allowed: torch.Tensor | None, banned_eos: Sequence[Sequence[int]]
) -> None:
    """Sets banned ids to -inf, except in rows where that would leave nothing to sample: there
    the grammar outranks min_new_tokens (a grammar may require EOS)."""
    batch, vocab = x.shape
    assert len(banned_eos) == batch
    per_row = [sorted({t for t in ids if 0 <= t < vocab}) for ids in banned_eos]
    rows = long_tensor([i for i, ids in enumerate(per_row) for _ in ids], x.device)
    tokens = long_tensor([t for ids in per_row for t in ids], x.device)
    if allowed is None:
        allowed_count = torch.full((batch,), vocab, device=x.device)
        hits = torch.ones(len(tokens), dtype=torch.long, device=x.device)
    else:
        allowed_count = allowed.view(torch.uint8).sum(dim=-1)
        hits = allowed[rows, tokens].long()
    banned_allowed = torch.zeros(batch, dtype=torch.long, device=x.device).index_add_(0, rows, hits)
    keep = (banned_allowed < allowed_count)[rows]
    x[rows[keep], tokens[keep]] = float("-inf")


def _sample_rows(x: torch.Tensor, states: list[SamplingRequestState]) -> torch.Tensor:
    """One draw per row of ``x`` (num_rows, vocab): temperature, then top_k/top_p/min_p."""
    num_rows = x.shape[0]
    device = x.device
    params = [s.params for s in states]
    temperatures = [min(p.temperature, _MAX_APPLIED_TEMPERATURE) for p in params]
    if any(t != 1.0 for t in temperatures):
        x = x / float_tensor(temperatures, device).view(num_rows, 1)
        scores = x.sub_(x.amax(dim=-1, keepdim=True))
    else:
        scores = x - x.amax(dim=-1, keepdim=True)
    # Unnormalised softmax, each row's best token at exactly 1: no pass to normalise, and every
    # step below only needs ratios. exp() takes a slow path (10-20x on CPU) wherever its result
    # underflows, as it does for every masked token; so the exponent is floored first and what
    # sat at the floor is zeroed after (relative weight < 1e-34: never sampled either way).
    scores = scores.clamp_(min=_EXP_FLOOR).exp_()  # (num_rows, vocab)
    torch.nn.functional.threshold_(scores, _EXP_FLOOR_CUT, 0.0)
    chosen = torch.empty(num_rows, dtype=torch.long, device=device)
    with_top_k = [i for i, p in enumerate(params) if p.top_k > 0]
    without = [i for i, p in enumerate(params) if p.top_k <= 0]
    for group, sampler in ((with_top_k, _sample_top_k), (without, _sample_nucleus)):
        if group:
            rows = _row_index(group, num_rows, device)
            _put(chosen, rows, sampler(_take(scores, rows), [states[i] for i in group]))
    return chosen


def _sample_top_k(scores: torch.Tensor, states: list[SamplingRequestState]) -> torch.Tensor:
    """top_k, then top_p over the renormalised top k (like HF and vLLM), then min_p.
    ``scores``: (n, vocab) unnormalised probabilities."""
    device = scores.device
    params = [s.params for s in states]
    top_k = long_tensor([p.top_k for p in params], device).view(-1, 1)
    top_p = float_tensor([p.top_p for p in params], device).view(-1, 1)
    min_p = float_tensor([p.min_p for p in params], device).view(-1, 1)
    width = min(scores.shape[1], max(p.top_k for p in params))
    values, ids = scores.topk(width, dim=-1)  # (n, width), most likely first
    values = values * (torch.arange(width, device=device).view(1, -1) < top_k)
    mass_before = (values.cumsum(dim=-1) - values) / values.sum(dim=-1, keepdim=True)
    keep = (mass_before < top_p) | (top_p >= 1.0)
    # min_p is relative to the most likely token, which top_k and top_p always keep.
    keep &= values >= values[:, :1] * min_p
    positions = _inverse_cdf(values * keep, _uniforms(states).to(device))
    return ids.gather(1, positions.view(-1, 1)).view(-1)


def _sample_nucleus(scores: torch.Tensor, states: list[SamplingRequestState]) -> torch.Tensor:
    """min_p and top_p over the whole vocabulary, without sorting it. ``scores``: (n, vocab)
    unnormalised probabilities with each row's maximum at 1.

    top_p keeps token j when the tokens strictly more likely than j hold less than top_p of the
    mass; that set is closed upwards. So draw from the distribution and accept j if it is in the
    set; otherwise every token at most as likely as j is out too, and the row draws again among
    the more likely ones. Accepted draws follow the distribution restricted to the set, and a
    round is accepted with probability >= top_p, so few rounds are needed.
    """
    device = scores.device
    params = [s.params for s in states]
    weights = scores
    min_p = [p.min_p for p in params]
    if any(min_p):
        # Relative to the most likely token (score 1), which top_p always keeps.
        weights = scores.masked_fill(scores < float_tensor(min_p, device).view(-1, 1), 0.0)
    chosen = _inverse_cdf(weights, _uniforms(states).to(device))
    pending = [i for i, p in enumerate(params) if p.top_p < 1.0]
    if not pending:
        return chosen
    rows = _row_index(pending, len(params), device)
    # top_p is a share of the whole distribution, before min_p.
    needed = _take(scores, rows).sum(dim=-1) * float_tensor(
        [params[i].top_p for i in pending], device
    )
    while pending:
        rows = _row_index(pending, len(params), device)
        row_scores = _take(scores, rows)
        drawn = row_scores.gather(1, _take(chosen, rows).view(-1, 1))  # (n, 1)
        mass_above = torch.where(row_scores > drawn, row_scores, 0.0).sum(dim=-1)
        rejected = mass_above >= needed
        pending = [i for i, r in zip(pending, rejected.tolist(), strict=True) if r]
        if pending:
            needed = needed[rejected]
            rows = long_tensor(pending, device)
            redraw = torch.where(row_scores[rejected] > drawn[rejected], weights[rows], 0.0)
            chosen[rows] = _inverse_cdf(redraw, _uniforms([states[i] for i in pending]).to(device))
    return chosen


def _inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Index drawn with probability proportional to ``weights`` (n, m), one uniform per row.

    Searching for the first cumulative weight strictly above ``u * total`` never lands on a zero
    weight: such an entry has the same cumulative value as the one before it.
    """
    cdf = weights.cumsum(dim=-1)  # (n, m)
    total = cdf[:, -1:].contiguous()  # (n, 1)
    positions = torch.searchsorted(cdf, uniforms.view(-1, 1) * total, right=True)
    # u * total may round up to total; then take the entry that reaches the total (weight > 0).
    last = torch.searchsorted(cdf, total, right=False)
    return torch.where(positions < cdf.shape[1], positions, last).view(-1)


def _uniforms(states: Sequence[SamplingRequestState]) -> torch.Tensor:
    """One U[0, 1) number per row on the CPU: seeded rows from their own generator."""
    shared = [i for i, s in enumerate(states) if s.generator is None]
    if len(shared) == len(states):
        return torch.rand(len(states))
    uniforms = torch.empty(len(states))
    if shared:
        uniforms[shared] = torch.rand(len(shared))
    for i, state in enumerate(states):
        if state.generator is not None:
            uniforms[i] = torch.rand(1, generator=state.generator)
    return uniforms


def _row_index(rows: list[int], batch: int, device: torch.device) -> torch.Tensor | None:
    """None when ``rows`` is the whole batch, so callers skip a gather and a scatter."""
    return None if len(rows) == batch else long_tensor(rows, device)


def _take(t: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    return t if rows is None else t[rows]


def _put(dst: torch.Tensor, rows: torch.Tensor | None, values: torch.Tensor) -> None:
    if rows is None:
        dst.copy_(values)
    else:
        dst[rows] = values
