"""Batched next-token sampling for one decode step.

Per row, in this order: logit_bias -> repetition_penalty (HF: over prompt + output tokens, divide
positive logits, multiply negative ones) -> frequency/presence penalties (OpenAI: over output
tokens) -> grammar mask and banned ids set to -inf -> exact argmax for greedy rows, otherwise
temperature -> top_k -> top_p (over the top_k-renormalised distribution, like HF and vLLM) ->
min_p -> one draw by inverse CDF.

Every step is vectorised across the batch and skipped when no row needs it. Each sampling row
consumes exactly one uniform number per step, drawn on the CPU from the row's own generator when
it has a seed (else from torch's global RNG); so a seeded row gets the same token for the same
logits and history whatever else is in the batch (up to ties between equal probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from radixlm.runtime.logprobs import TopLogprobs, token_logprobs
from radixlm.runtime.sampling_params import SamplingParams

__all__ = [
    "SampleOutput",
    "SamplingRequestState",
    "make_state",
    "processed_logits",
    "sample",
    "token_logprobs",
]

# top_p rows without top_k first look at this many most likely tokens; only when those hold less
# than top_p of the mass does the step fall back to ranking the whole vocabulary.
TOP_P_CANDIDATES = 1024


@dataclass(eq=False)
class SamplingRequestState:
    """What the sampler needs to remember about one running request.

    ``output_ids`` grows by appends (sampled and forced tokens alike); penalty counts follow it
    lazily. Replacing already-counted tokens is noticed when the last counted token changes or
    the list shrinks, and triggers a recount.
    """

    params: SamplingParams
    output_ids: list[int]
    # Distinct prompt tokens as a set and a (num_distinct,) int64 CPU tensor; only kept when
    # repetition_penalty is on (empty set and None otherwise).
    prompt_token_set: frozenset[int]
    prompt_token_ids: torch.Tensor | None
    # Created from params.sampling_seed; None draws from torch's global RNG.
    generator: torch.Generator | None
    _output_counts: dict[int, int] = field(default_factory=dict, init=False, repr=False)
    _counted_len: int = field(default=0, init=False, repr=False)
    _counted_last: int = field(default=-1, init=False, repr=False)

    def output_counts(self) -> dict[int, int]:
        """Token id -> occurrences in ``output_ids``."""
        ids, counted = self.output_ids, self._counted_len
        if counted > len(ids) or (counted and ids[counted - 1] != self._counted_last):
            self._output_counts.clear()
            counted = 0
        counts = self._output_counts
        for token in ids[counted:]:
            counts[token] = counts.get(token, 0) + 1
        self._counted_len = len(ids)
        self._counted_last = ids[-1] if ids else -1
        return counts


def make_state(params: SamplingParams, prompt_ids: Sequence[int]) -> SamplingRequestState:
    generator = None
    if params.sampling_seed is not None:
        # torch seeds are unsigned 64-bit; fold any user integer into that range.
        generator = torch.Generator().manual_seed(params.sampling_seed % 2**64)
    distinct: frozenset[int] = frozenset()
    distinct_ids = None
    if params.repetition_penalty != 1.0:
        distinct = frozenset(prompt_ids)
        distinct_ids = torch.tensor(sorted(distinct), dtype=torch.long)
    return SamplingRequestState(
        params=params,
        output_ids=[],
        prompt_token_set=distinct,
        prompt_token_ids=distinct_ids,
        generator=generator,
    )


@dataclass
class SampleOutput:
    next_token_ids: list[int]
    # Logprob of each chosen token under the raw distribution log_softmax(logits).
    logprobs: list[float]
    # Per row, the most likely (token id, raw logprob) pairs; empty lists unless asked for.
    top_logprobs: list[TopLogprobs]


def sample(
    logits: torch.Tensor,
    states: Sequence[SamplingRequestState],
    allowed_masks: torch.Tensor | None = None,
    banned_eos: Sequence[Sequence[int]] | None = None,
    top_logprobs_num: int = 0,
) -> SampleOutput:
    """Picks one next token per row.

    ``logits``: (batch, vocab) raw model logits. ``allowed_masks``: (batch, mask_vocab) bool with
    mask_vocab <= vocab, True = allowed; columns past mask_vocab (padding of the model's vocab)
    count as disallowed. ``banned_eos``: per row, ids to forbid this step (EOS and stop ids while
    the output is shorter than min_new_tokens). The grammar outranks the ban: a row whose grammar
    allows only banned ids samples among them. A row with no allowed token at all raises
    ValueError naming the rows. ``top_logprobs_num``: how many top raw logprobs per row to return.
    """
    batch = logits.shape[0]
    assert len(states) == batch, (len(states), batch)
    if batch == 0:
        return SampleOutput([], [], [])
    x = processed_logits(logits, states, allowed_masks, banned_eos)
    next_ids = torch.empty(batch, dtype=torch.long, device=x.device)
    greedy = [i for i, s in enumerate(states) if s.params.is_greedy]
    sampled = [i for i, s in enumerate(states) if not s.params.is_greedy]
    if greedy:
        rows = _row_index(greedy, batch, x.device)
        # torch.argmax returns the first maximum: ties go to the lowest id, batch or not.
        _put(next_ids, rows, _take(x, rows).argmax(dim=-1))
    if sampled:
        rows = _row_index(sampled, batch, x.device)
        _put(next_ids, rows, _sample_rows(_take(x, rows), [states[i] for i in sampled]))
    logprobs, top = token_logprobs(logits, next_ids, top_logprobs_num)
    return SampleOutput(next_ids.tolist(), logprobs, top)


def processed_logits(
    logits: torch.Tensor,
    states: Sequence[SamplingRequestState],
    allowed_masks: torch.Tensor | None = None,
    banned_eos: Sequence[Sequence[int]] | None = None,
) -> torch.Tensor:
    """Float32 logits after logit_bias, penalties and masks (the input itself when no row needs
    any of them; never modified in place). Arguments as for ``sample``."""
    x = logits.float()
    has_bans = banned_eos is not None and any(banned_eos)
    edits = allowed_masks is not None or has_bans or any(_edits_logits(s.params) for s in states)
    if not edits:
        return x
    if x is logits:
        x = x.clone()
    _apply_logit_bias(x, states)
    _apply_penalties(x, states)
    if allowed_masks is not None or has_bans:
        _apply_masks(x, allowed_masks, banned_eos if has_bans else None)
    return x


def _edits_logits(params: SamplingParams) -> bool:
    return bool(
        params.logit_bias
        or params.repetition_penalty != 1.0
        or params.frequency_penalty != 0.0
        or params.presence_penalty != 0.0
    )


def _apply_logit_bias(x: torch.Tensor, states: Sequence[SamplingRequestState]) -> None:
    vocab = x.shape[1]
    rows: list[int] = []
    tokens: list[int] = []
    biases: list[float] = []
    for i, state in enumerate(states):
        for token, bias in state.params.logit_bias.items():
            # Ids past the model's vocabulary cannot be sampled anyway; the HTTP edge accepts
            # any integer, so they are dropped here rather than crash the whole batch.
            if 0 <= token < vocab:
                rows.append(i)
                tokens.append(token)
                biases.append(bias)
    if rows:
        index = (_long(rows, x.device), _long(tokens, x.device))
        x.index_put_(index, torch.tensor(biases, device=x.device), accumulate=True)


def _apply_penalties(x: torch.Tensor, states: Sequence[SamplingRequestState]) -> None:
    """Repetition penalty (prompt + output tokens), then frequency/presence (output tokens)."""
    rep_rows, rep_tokens, rep_factors = [], [], []
    freq_rows, freq_tokens, freq_deltas = [], [], []
    for i, state in enumerate(states):
        params = state.params
        wants_rep = params.repetition_penalty != 1.0
        wants_freq = params.frequency_penalty != 0.0 or params.presence_penalty != 0.0
        if not (wants_rep or wants_freq):
            continue
        counts = state.output_counts()
        if wants_rep:
            assert state.prompt_token_ids is not None
            extra = [t for t in counts if t not in state.prompt_token_set]
            tokens = torch.cat([state.prompt_token_ids, _long(extra, "cpu")])
            rep_rows.append(torch.full_like(tokens, i))
            rep_tokens.append(tokens)
            rep_factors.append(torch.full(tokens.shape, params.repetition_penalty))
        if wants_freq and counts:
            occurrences = torch.tensor(list(counts.values()), dtype=torch.float32)
            freq_rows.append(torch.full(occurrences.shape, i, dtype=torch.long))
            freq_tokens.append(_long(list(counts), "cpu"))
            # OpenAI: logit -= frequency_penalty * count + presence_penalty * (count > 0)
            freq_deltas.append(occurrences * params.frequency_penalty + params.presence_penalty)
    if rep_rows:
        index = (torch.cat(rep_rows).to(x.device), torch.cat(rep_tokens).to(x.device))
        factor = torch.cat(rep_factors).to(x.device)
        values = x[index]
        # Tokens within a row are distinct, so the write has no duplicate indices.
        x[index] = torch.where(values > 0, values / factor, values * factor)
    if freq_rows:
        index = (torch.cat(freq_rows).to(x.device), torch.cat(freq_tokens).to(x.device))
        x.index_put_(index, -torch.cat(freq_deltas).to(x.device), accumulate=True)


def _apply_masks(
    x: torch.Tensor,
    allowed_masks: torch.Tensor | None,
    banned_eos: Sequence[Sequence[int]] | None,
) -> None:
    batch, vocab = x.shape
    if allowed_masks is not None:
        assert allowed_masks.dtype == torch.bool and allowed_masks.shape[0] == batch
        mask_vocab = allowed_masks.shape[1]
        assert mask_vocab <= vocab, (mask_vocab, vocab)
        x[:, :mask_vocab].masked_fill_(~allowed_masks.to(x.device), float("-inf"))
        x[:, mask_vocab:] = float("-inf")
    saved = None
    if banned_eos is not None:
        assert len(banned_eos) == batch
        rows = [i for i, ids in enumerate(banned_eos) for _ in ids]
        if rows:
            index = (_long(rows, x.device), _long([t for ids in banned_eos for t in ids], x.device))
            saved = (index, x[index])
            x[index] = float("-inf")
    dead = torch.isneginf(x.amax(dim=-1))
    if saved is not None and bool(dead.any()):
        # The grammar outranks min_new_tokens: give dead rows their banned ids back.
        index, values = saved
        restore = dead[index[0]]
        x[index[0][restore], index[1][restore]] = values[restore]
        dead = torch.isneginf(x.amax(dim=-1))
    if bool(dead.any()):
        raise ValueError(f"no allowed token in batch rows {dead.nonzero().view(-1).tolist()}")


def _sample_rows(x: torch.Tensor, states: list[SamplingRequestState]) -> torch.Tensor:
    """One draw per row of ``x`` (num_rows, vocab): temperature, top_k, top_p, min_p."""
    num_rows = x.shape[0]
    device = x.device
    params = [s.params for s in states]
    temperatures = [p.temperature for p in params]
    if any(t != 1.0 for t in temperatures):
        x = x / _float(temperatures, device).view(num_rows, 1)
    probs = torch.softmax(x, dim=-1)  # (num_rows, vocab)
    uniforms = _uniforms(states).to(device)
    chosen = torch.empty(num_rows, dtype=torch.long, device=device)
    ranked = [i for i, p in enumerate(params) if p.top_k > 0 or p.top_p < 1.0]
    unranked = [i for i, p in enumerate(params) if not (p.top_k > 0 or p.top_p < 1.0)]
    if unranked:
        rows = _row_index(unranked, num_rows, device)
        weights = _take(probs, rows)
        min_p = [params[i].min_p for i in unranked]
        if any(min_p):
            # Relative to the most likely token, so no ranking is needed.
            threshold = weights.amax(dim=-1, keepdim=True) * _float(min_p, device).view(-1, 1)
            weights = weights.masked_fill(weights < threshold, 0.0)
        _put(chosen, rows, _inverse_cdf(weights, _take(uniforms, rows)))
    if ranked:
        rows = _row_index(ranked, num_rows, device)
        picked = _sample_ranked(
            _take(probs, rows), [params[i] for i in ranked], _take(uniforms, rows)
        )
        _put(chosen, rows, picked)
    return chosen


def _sample_ranked(
    probs: torch.Tensor, params: list[SamplingParams], uniforms: torch.Tensor
) -> torch.Tensor:
    """top_k, top_p and min_p over the most likely tokens of each row of ``probs`` (n, vocab)."""
    vocab = probs.shape[1]
    device = probs.device
    has_top_k = torch.tensor([p.top_k > 0 for p in params], device=device).view(-1, 1)
    top_k = _long([p.top_k if p.top_k > 0 else vocab for p in params], device).view(-1, 1)
    top_p = _float([p.top_p for p in params], device).view(-1, 1)
    min_p = _float([p.min_p for p in params], device).view(-1, 1)
    # Rows with top_k need only their k best. top_p-only rows try a bounded candidate set, and the
    # whole vocabulary is ranked only when those candidates hold less than top_p of the mass.
    width = min(vocab, max(p.top_k if p.top_k > 0 else TOP_P_CANDIDATES for p in params))
    values, ids = probs.topk(width, dim=-1)  # (n, width), most likely first
    if width < vocab and not bool((has_top_k | (values.sum(-1, keepdim=True) >= top_p)).all()):
        values, ids = probs.sort(dim=-1, descending=True)  # (n, vocab)
        width = vocab
    values = values * (torch.arange(width, device=device).view(1, -1) < top_k)
    # top_p sees the distribution renormalised after top_k; without top_k that is the full one.
    norm = torch.where(has_top_k, values.sum(-1, keepdim=True), 1.0)
    mass_before = (values.cumsum(dim=-1) - values) / norm
    keep = (mass_before < top_p) | (top_p >= 1.0)
    # min_p is relative to the most likely token, which top_k and top_p always keep.
    keep &= values >= values[:, :1] * min_p
    positions = _inverse_cdf(values * keep, uniforms)
    return ids.gather(1, positions.view(-1, 1)).view(-1)


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
    return None if len(rows) == batch else _long(rows, device)


def _take(t: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    return t if rows is None else t[rows]


def _put(dst: torch.Tensor, rows: torch.Tensor | None, values: torch.Tensor) -> None:
    if rows is None:
        dst.copy_(values)
    else:
        dst[rows] = values


def _long(values: list[int], device: torch.device | str) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)


def _float(values: list[float], device: torch.device | str) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device)
