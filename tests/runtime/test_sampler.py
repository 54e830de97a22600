"""Sampler tests: greedy, masks, top_k/top_p/min_p, penalties, seeds, logprobs, distributions."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from radixlm.runtime import sampler as sampler_module
from radixlm.runtime.logprobs import token_logprobs
from radixlm.runtime.sampler import (
    MASKED_LOGIT,
    SamplingRequestState,
    make_state,
    processed_logits,
    sample,
)
from radixlm.runtime.sampling_params import SamplingParams


def _states(n: int, **params: object) -> list[SamplingRequestState]:
    return [make_state(SamplingParams(**params), []) for _ in range(n)]


def _repeat(logits: list[float], n: int) -> torch.Tensor:
    return torch.tensor([logits] * n, dtype=torch.float32)


def _assert_close(got: torch.Tensor, expected: torch.Tensor) -> None:
    # Not torch.testing.assert_close: its first call spends seconds on lazy imports.
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5), (got - expected).abs().max()


@pytest.fixture(autouse=True)
def _seed_global_rng() -> None:
    torch.manual_seed(1234)


# ---- greedy --------------------------------------------------------------------------------


def test_greedy_is_argmax_with_lowest_id_on_ties() -> None:
    logits = torch.randn(16, 300)
    logits[3, [7, 40, 250]] = 50.0  # a three-way tie at the top of row 3
    out = sample(logits, _states(16, temperature=0.0))
    assert out.next_token_ids == logits.argmax(dim=-1).tolist()
    assert out.next_token_ids[3] == 7


def test_batched_greedy_equals_solo_greedy() -> None:
    logits = torch.randn(8, 500)
    params = [SamplingParams(temperature=0.0), SamplingParams(temperature=0.9)] * 4
    batched = sample(logits, [make_state(p, []) for p in params]).next_token_ids
    for i in range(0, 8, 2):
        solo = sample(logits[i : i + 1], [make_state(params[i], [])]).next_token_ids
        assert solo == [batched[i]]


def test_top_k_1_is_greedy() -> None:
    logits = torch.randn(32, 200)
    out = sample(logits, _states(32, temperature=5.0, top_k=1))
    assert out.next_token_ids == logits.argmax(dim=-1).tolist()


def test_tiny_top_p_is_greedy() -> None:
    logits = torch.randn(64, 200) * 0.3
    out = sample(logits, _states(64, temperature=1.0, top_p=1e-6))
    assert out.next_token_ids == logits.argmax(dim=-1).tolist()


# ---- masks and bans ------------------------------------------------------------------------


def test_masked_tokens_never_sampled_even_at_high_temperature() -> None:
    batch, vocab = 512, 40
    logits = torch.randn(batch, vocab)
    allowed = torch.rand(batch, vocab) < 0.2
    allowed[:, 0] = True  # at least one allowed token per row
    logits[~allowed] += 20.0  # masked tokens would otherwise dominate
    for params in (
        {"temperature": 5.0},
        {"temperature": 5.0, "top_k": 30},
        {"temperature": 5.0, "top_p": 0.99},
        {"temperature": 5.0, "min_p": 0.01},
        {"temperature": 0.0},
        # Past float32's range (the native API has no upper bound): once NaN logits, a 500.
        {"temperature": 1e308, "top_k": 5},
        {"temperature": 1e308},
    ):
        out = sample(logits, _states(batch, **params), allowed_masks=allowed)
        chosen = torch.tensor(out.next_token_ids)
        assert allowed[torch.arange(batch), chosen].all(), params


def test_processed_logits_mask_values() -> None:
    logits = torch.randn(3, 12)
    allowed = torch.rand(3, 12) < 0.5
    allowed[:, 0] = True
    got = processed_logits(logits, _states(3), allowed_masks=allowed)
    assert torch.equal(got[allowed], logits[allowed])
    assert (got[~allowed] == MASKED_LOGIT).all()
    banned = processed_logits(logits, _states(3), banned_eos=[[1], [], [2, 3]])
    assert torch.isneginf(banned[0, 1]) and torch.isneginf(banned[2, 2:4]).all()
    assert torch.equal(banned[1], logits[1])


# u = 1 stands for u * total rounding up to total, which a u just below 1 can do.
@pytest.mark.parametrize("uniform", [0.0, 1.0])
@pytest.mark.parametrize("params", [{}, {"top_k": 50}, {"top_p": 0.999}])
def test_extreme_uniforms_never_land_on_masked_tokens(
    monkeypatch: pytest.MonkeyPatch, uniform: float, params: dict
) -> None:
    """The inverse CDF at both ends of [0, 1] must still pick allowed tokens."""
    monkeypatch.setattr(
        sampler_module, "_uniforms", lambda states: torch.full((len(states),), uniform)
    )
    vocab = 100
    logits = torch.zeros(4, vocab)
    allowed = torch.zeros(4, vocab, dtype=torch.bool)
    allowed[:, 10:20] = True  # masked tokens on both sides of the allowed block
    out = sample(logits, _states(4, temperature=1.5, **params), allowed_masks=allowed)
    assert all(10 <= t < 20 for t in out.next_token_ids)


def test_mask_narrower_than_vocab_disallows_padding_columns() -> None:
    logits = torch.zeros(64, 20)
    logits[:, 16:] = 30.0  # padding columns of the model vocab, most likely by far
    allowed = torch.ones(64, 16, dtype=torch.bool)
    out = sample(logits, _states(64, temperature=2.0), allowed_masks=allowed)
    assert max(out.next_token_ids) < 16


def test_low_temperature_with_mask_picks_the_best_allowed_token() -> None:
    logits = torch.randn(64, 300) * 5
    allowed = torch.rand(64, 300) < 0.3
    allowed[:, 0] = True
    out = sample(logits, _states(64, temperature=0.01), allowed_masks=allowed)
    chosen = torch.tensor(out.next_token_ids)
    rows = torch.arange(64)
    assert allowed[rows, chosen].all()
    # A token 0.2 below the best allowed one has odds of e^-20 at this temperature.
    best = torch.where(allowed, logits, float("-inf")).amax(dim=-1)
    assert (logits[rows, chosen] >= best - 0.2).all()


def test_banned_ids_never_sampled() -> None:
    logits = torch.zeros(256, 10)
    logits[:, 2] = 5.0
    banned = [[2, 3]] * 256
    out = sample(logits, _states(256, temperature=1.0), banned_eos=banned)
    assert not {2, 3} & set(out.next_token_ids)
    assert sample(logits[:1], _states(1, temperature=0.0), banned_eos=[[2]]).next_token_ids != [2]


def test_grammar_outranks_banned_ids() -> None:
    logits = torch.randn(2, 10)
    allowed = torch.zeros(2, 10, dtype=torch.bool)
    allowed[0, 9] = True  # row 0: the grammar allows only EOS (id 9), which is banned
    allowed[1, [4, 9]] = True
    out = sample(logits, _states(2, temperature=1.0), allowed_masks=allowed, banned_eos=[[9], [9]])
    assert out.next_token_ids == [9, 4]


def test_row_without_allowed_tokens_raises() -> None:
    allowed = torch.ones(3, 10, dtype=torch.bool)
    allowed[1] = False
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        sample(torch.randn(3, 10), _states(3), allowed_masks=allowed)


# ---- top_k / top_p / min_p -----------------------------------------------------------------


def _support(logits: list[float], n: int = 4000, **params: object) -> Counter[int]:
    # One state object repeated: rows without a seed share nothing but the global RNG.
    states = [make_state(SamplingParams(**params), [])] * n
    return Counter(sample(_repeat(logits, n), states).next_token_ids)


def test_top_k_keeps_the_k_best() -> None:
    logits = [0.0, 3.0, 1.0, 2.5, 2.0, -1.0]
    counts = _support(logits, top_k=3)
    assert set(counts) == {1, 3, 4}


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs = [0.5, 0.3, 0.15, 0.05]
    counts = _support([math.log(p) for p in probs], top_p=0.7)
    assert set(counts) == {0, 1}
    # Renormalised within the nucleus: 0.5 / 0.8 and 0.3 / 0.8.
    assert counts[0] / 4000 == pytest.approx(0.625, abs=0.04)


def test_top_p_applies_to_the_top_k_renormalised_distribution() -> None:
    probs = [0.4, 0.3, 0.2, 0.1]
    # After top_k=2: [4/7, 3/7]; the first token alone already exceeds top_p=0.5.
    counts = _support([math.log(p) for p in probs], top_k=2, top_p=0.5)
    assert set(counts) == {0}


def test_wide_nucleus_reaches_deep_tokens_and_stops_at_its_edge() -> None:
    vocab = 4096
    logits = -1e-3 * torch.arange(vocab, dtype=torch.float32)  # slowly decreasing: wide nucleus
    probs = torch.softmax(logits, dim=-1)
    nucleus = int((probs.cumsum(0) - probs < 0.9).sum())
    assert nucleus > 2000
    out = sample(logits.repeat(400, 1), _states(400, top_p=0.9))
    assert max(out.next_token_ids) < nucleus
    assert max(out.next_token_ids) > nucleus * 0.9


def test_top_p_and_min_p_together() -> None:
    probs = [0.35, 0.3, 0.2, 0.1, 0.05]
    logits = [math.log(p) for p in probs]
    assert set(_support(logits, top_p=0.8)) == {0, 1, 2}
    # min_p=0.5 drops probs below 0.175 inside that nucleus.
    assert set(_support(logits, top_p=0.8, min_p=0.5)) == {0, 1, 2}
    assert set(_support(logits, top_p=0.8, min_p=0.6)) == {0, 1}


def test_min_p_drops_tokens_below_a_fraction_of_the_best() -> None:
    probs = [0.4, 0.25, 0.19, 0.16]  # min_p=0.5 keeps probs >= 0.2
    logits = [math.log(p) for p in probs]
    assert set(_support(logits, min_p=0.5)) == {0, 1}
    assert set(_support(logits, min_p=0.5, top_k=3)) == {0, 1}  # the ranked path agrees


# ---- logit bias and penalties --------------------------------------------------------------


def test_logit_bias_moves_the_greedy_choice() -> None:
    logits = torch.randn(2, 50)
    logits[0, 7] = logits[0].min()
    best = int(logits[1].argmax())
    params = [
        SamplingParams(temperature=0.0, logit_bias={7: 100.0}),
        # An id past the vocabulary is ignored rather than failing the batch.
        SamplingParams(temperature=0.0, logit_bias={best: -100.0, 10**6: 5.0}),
    ]
    out = sample(logits, [make_state(p, []) for p in params])
    assert out.next_token_ids[0] == 7
    assert out.next_token_ids[1] == int(logits[1].topk(2).indices[1])


def _reference_processed(logits: torch.Tensor, state: SamplingRequestState, prompt: list[int]):
    """Straightforward per-row, per-token version of the logits processors."""
    row = logits.clone()
    params = state.params
    for token, bias in params.logit_bias.items():
        row[token] += bias
    if params.repetition_penalty != 1.0:
        for token in set(prompt) | set(state.output_ids):
            value = row[token]
            row[token] = (
                value / params.repetition_penalty
                if value > 0
                else value * params.repetition_penalty
            )
    for token, count in Counter(state.output_ids).items():
        row[token] -= params.frequency_penalty * count + params.presence_penalty
    return row


def test_penalties_match_a_per_row_reference() -> None:
    vocab = 64
    logits = torch.randn(5, vocab) * 3
    cases = [
        (SamplingParams(repetition_penalty=1.5), [1, 2, 2, 3], [3, 4, 4]),
        (SamplingParams(frequency_penalty=0.7), [1, 2], [5, 5, 5, 6]),
        (SamplingParams(presence_penalty=-1.2), [9], [5, 5, 6]),
        (
            SamplingParams(
                repetition_penalty=0.8,
                frequency_penalty=0.3,
                presence_penalty=0.4,
                logit_bias={4: 2.0, 10: -3.0},
            ),
            [4, 10, 11],
            [11, 12, 12, 4],
        ),
        (SamplingParams(), [1, 2, 3], [1, 2, 3]),  # no penalties: untouched
    ]
    states = []
    for params, prompt, output in cases:
        state = make_state(params, prompt)
        state.output_ids.extend(output)
        states.append(state)
    got = processed_logits(logits, states)
    for i, (_, prompt, _) in enumerate(cases):
        _assert_close(got[i], _reference_processed(logits[i], states[i], prompt))
    assert not torch.equal(got[0], logits[0])


def test_penalty_counts_grow_step_by_step() -> None:
    vocab = 300
    logits = torch.randn(2, vocab) * 3
    params = SamplingParams(repetition_penalty=1.2, frequency_penalty=0.1, presence_penalty=0.2)
    prompt = list(range(0, 60, 3))
    states = [make_state(params, prompt), make_state(SamplingParams(frequency_penalty=0.5), [])]
    generator = torch.Generator().manual_seed(0)
    for step in range(12):
        # Several new tokens per step, many distinct: the tracker's buffers must grow.
        for state in states:
            state.output_ids.extend(
                torch.randint(0, vocab, (step + 1,), generator=generator).tolist()
            )
        got = processed_logits(logits, states)
        _assert_close(got[0], _reference_processed(logits[0], states[0], prompt))
        _assert_close(got[1], _reference_processed(logits[1], states[1], []))


def test_penalty_counts_follow_output_rewrites() -> None:
    logits = torch.randn(1, 20)
    state = make_state(SamplingParams(frequency_penalty=1.0), [])
    state.output_ids.extend([1, 2, 3])
    processed_logits(logits, [state])
    state.output_ids.append(3)
    state.output_ids[-1] = 7  # replaced after being counted
    processed_logits(logits, [state])
    state.output_ids[:] = [2, 7]  # shrunk
    got = processed_logits(logits, [state])
    _assert_close(got[0], _reference_processed(logits[0], state, []))


def test_input_logits_are_not_modified() -> None:
    logits = torch.randn(3, 30)
    before = logits.clone()
    states = [
        make_state(SamplingParams(repetition_penalty=1.3, logit_bias={1: 3.0}), [1, 2, 3]),
        make_state(SamplingParams(temperature=0.0), []),
        make_state(SamplingParams(frequency_penalty=1.0), [4]),
    ]
    states[2].output_ids.append(5)
    allowed = torch.ones(3, 30, dtype=torch.bool)
    allowed[:, 0] = False
    sample(logits, states, allowed_masks=allowed, banned_eos=[[1], [], [2]])
    assert torch.equal(logits, before)


# ---- seeds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"temperature": 0.8},
        {"temperature": 1.2, "top_k": 20},
        {"temperature": 1.0, "top_p": 0.9},
        {"temperature": 0.7, "top_k": 50, "top_p": 0.95, "min_p": 0.02},
        {"temperature": 1.0, "frequency_penalty": 0.5, "repetition_penalty": 1.1},
    ],
)
def test_seeded_row_is_reproducible_in_any_batch(params: dict) -> None:
    vocab, steps = 2000, 12
    step_logits = [torch.randn(vocab) * 2 for _ in range(steps)]
    seeded = SamplingParams(sampling_seed=42, **params)

    def run(batch_extra: int, position: int) -> list[int]:
        state = make_state(seeded, [1, 2, 3])
        others = [
            make_state(SamplingParams(temperature=1.0, top_p=0.5, sampling_seed=i), [])
            if i % 2
            else make_state(SamplingParams(temperature=0.5, top_k=3 + i), [])
            for i in range(batch_extra)
        ]
        tokens = []
        for logits in step_logits:
            batch = torch.randn(batch_extra + 1, vocab) * 2
            batch[position] = logits
            states = others[:position] + [state] + others[position:]
            token = sample(batch, states).next_token_ids[position]
            state.output_ids.append(token)
            tokens.append(token)
        return tokens

    alone = run(0, 0)
    assert run(7, 3) == alone
    assert run(3, 3) == alone
    assert len(set(alone)) > 1


def test_different_seeds_give_different_samples() -> None:
    logits = torch.zeros(1, 1000)
    tokens = {
        sample(logits, [make_state(SamplingParams(sampling_seed=seed), [])]).next_token_ids[0]
        for seed in range(20)
    }
    assert len(tokens) > 10


# ---- logprobs ------------------------------------------------------------------------------


def test_logprobs_are_raw_log_softmax_values() -> None:
    logits = torch.randn(6, 100) * 2
    states = _states(3, temperature=0.3, top_k=5, repetition_penalty=1.5) + _states(
        3, temperature=0
    )
    out = sample(logits, states, top_logprobs_num=4)
    reference = torch.log_softmax(logits, dim=-1)
    for i, token in enumerate(out.next_token_ids):
        assert out.logprobs[i] == pytest.approx(float(reference[i, token]), abs=1e-5)
        top = out.top_logprobs[i]
        assert len(top) == 4
        assert [lp for _, lp in top] == sorted((lp for _, lp in top), reverse=True)
        assert [t for t, _ in top] == reference[i].topk(4).indices.tolist()
        for t, lp in top:
            assert lp == pytest.approx(float(reference[i, t]), abs=1e-5)


def test_top_logprobs_empty_unless_asked() -> None:
    out = sample(torch.randn(2, 10), _states(2))
    assert out.top_logprobs == [[], []]


def test_token_logprobs_for_prompt_tokens() -> None:
    logits = torch.randn(5, 40, dtype=torch.bfloat16)
    next_ids = torch.tensor([3, 0, 39, 7, 7])
    logprobs, top = token_logprobs(logits, next_ids, top_k=2)
    reference = torch.log_softmax(logits.float(), dim=-1)
    assert logprobs == pytest.approx(reference[torch.arange(5), next_ids].tolist(), abs=1e-5)
    assert all(len(row) == 2 and row[0][1] >= row[1][1] for row in top)
    assert token_logprobs(logits, next_ids)[1] == [[]] * 5


# ---- distributions -------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampling_frequencies_follow_softmax(temperature: float) -> None:
    logits = [1.0, 0.0, 2.0, -1.0, 0.5]
    n = 20_000
    counts = _support(logits, n=n, temperature=temperature)
    expected = torch.softmax(torch.tensor(logits) / temperature, dim=0).tolist()
    for token, p in enumerate(expected):
        assert counts[token] / n == pytest.approx(p, abs=0.015)


def test_seeded_rows_follow_softmax_too() -> None:
    logits = [1.0, 0.0, 2.0, -1.0]
    n = 4000
    states = [make_state(SamplingParams(sampling_seed=seed), []) for seed in range(n)]
    counts = Counter(sample(_repeat(logits, n), states).next_token_ids)
    for token, p in enumerate(torch.softmax(torch.tensor(logits), dim=0).tolist()):
        assert counts[token] / n == pytest.approx(p, abs=0.03)
