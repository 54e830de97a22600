"""The compiled CPU layer ops against their pure-torch references."""

from __future__ import annotations

import pytest
import torch

from radixlm.kernels.cpu_layer_ops import cpu_layer_ops_for, load_cpu_layer_ops
from radixlm.kernels.reference import (
    rmsnorm_reference,
    rotary_reference,
    silu_and_mul_reference,
    store_kv_reference,
)

ops = load_cpu_layer_ops()
pytestmark = pytest.mark.skipif(ops is None, reason="no C++ compiler for the CPU ops")


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("rows", [1, 3, 40])
@pytest.mark.parametrize("width", [64, 576, 1000])
def test_rms_norm_matches_reference(rows, width):
    x, weight = _randn(rows, width, seed=1) * 3, _randn(width, seed=2)
    expected, _ = rmsnorm_reference(x, weight, 1e-5)
    torch.testing.assert_close(ops.rms_norm(x, weight, 1e-5), expected, rtol=2e-6, atol=2e-6)


def test_add_rms_norm_updates_the_residual_in_place():
    x, residual, weight = _randn(17, 576, seed=3), _randn(17, 576, seed=4), _randn(576, seed=5)
    expected, expected_sum = rmsnorm_reference(x, weight, 1e-6, residual.clone())
    out = ops.add_rms_norm(x, residual, weight, 1e-6)
    assert torch.equal(residual, expected_sum)
    torch.testing.assert_close(out, expected, rtol=2e-6, atol=2e-6)


def test_rows_do_not_depend_on_their_batch():
    x, weight = _randn(40, 576, seed=6), _randn(576, seed=7)
    full = ops.rms_norm(x, weight, 1e-5)
    assert all(
        torch.equal(ops.rms_norm(x[i : i + 1], weight, 1e-5), full[i : i + 1]) for i in (0, 39)
    )


@pytest.mark.parametrize(("tokens", "heads", "dim"), [(1, 12, 64), (33, 4, 128), (5, 1, 32)])
def test_rotary_matches_reference_on_a_strided_view(tokens, heads, dim):
    # q and k side by side inside a wider qkv row, as the attention layer hands them over.
    qkv = _randn(tokens, (heads + 3) * dim, seed=8)
    x = qkv[:, : heads * dim].view(tokens, heads, dim)
    cos, sin_signed = _randn(tokens, 1, dim, seed=9), _randn(tokens, 1, dim, seed=10)
    out = ops.rotary(x, cos, sin_signed)
    assert out.is_contiguous() and out.shape == x.shape
    torch.testing.assert_close(out, rotary_reference(x, cos, sin_signed), rtol=2e-6, atol=2e-6)


def test_ops_are_offered_for_float32_or_bfloat16_cpu_tensors_of_one_dtype():
    bf16 = torch.ones(2, dtype=torch.bfloat16)
    assert cpu_layer_ops_for(torch.ones(2)) is ops
    assert cpu_layer_ops_for(bf16, bf16) is ops
    assert cpu_layer_ops_for(torch.ones(2), bf16) is None
    assert cpu_layer_ops_for(torch.ones(2, dtype=torch.float16)) is None


def _bf16_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Within one bfloat16 rounding (plus one of an input's) of the float32 reference."""
    assert actual.dtype == torch.bfloat16
    torch.testing.assert_close(actual.float(), expected, rtol=2**-7, atol=2**-7)


def test_bfloat16_ops_compute_in_float32_and_round_once():
    bf = torch.bfloat16
    x, residual = _randn(9, 576, seed=20).to(bf), _randn(9, 576, seed=21).to(bf)
    weight = _randn(576, seed=22).to(bf)
    expected, _ = rmsnorm_reference(x.float(), weight.float(), 1e-5)
    _bf16_close(ops.rms_norm(x, weight, 1e-5), expected)
    summed = residual.clone()
    out = ops.add_rms_norm(x, summed, weight, 1e-5)
    assert torch.equal(summed, residual.add(x))  # the residual sum rounds like torch's add
    _bf16_close(out, rmsnorm_reference(summed.float(), weight.float(), 1e-5)[0])
    gate_up = (_randn(5, 2 * 1536 + 6, seed=23) * 4).to(bf)  # a scalar tail past the vectors
    _bf16_close(ops.silu_and_mul(gate_up), silu_and_mul_reference(gate_up.float()))
    qk = _randn(3, 7 * 64, seed=24).to(bf).view(3, 7, 64)
    cos, sin_signed = (_randn(3, 1, 64, seed=s).to(bf) for s in (25, 26))
    _bf16_close(
        ops.rotary(qk, cos, sin_signed),
        rotary_reference(qk.float(), cos.float(), sin_signed.float()),
    )


@pytest.mark.parametrize("tokens", [1, 7, 40])
def test_silu_and_mul_matches_reference(tokens):
    gate_up = _randn(tokens, 2 * 1536, seed=11) * 4
    torch.testing.assert_close(
        ops.silu_and_mul(gate_up), silu_and_mul_reference(gate_up), rtol=2e-6, atol=2e-6
    )


def test_silu_and_mul_stays_finite_at_extreme_gates():
    # 11 wide: 8 in the vector loop, 3 in the scalar tail; e^-gate spans underflow to overflow.
    gate = torch.tensor([-1000.0, -100.0, -88.5, -20.0, 0.0, 1e-3, 20.0, 88.5, 100.0, 1000.0, -3.0])
    gate_up = torch.cat([gate, torch.linspace(-2, 2, 11)]).view(1, 22)
    out = ops.silu_and_mul(gate_up)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, silu_and_mul_reference(gate_up), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows_dtype", [torch.float32, torch.bfloat16])
# Scalar rows; vector rows on one thread; vector rows split over the threads (a prompt chunk).
@pytest.mark.parametrize(("tokens", "head_dim"), [(5, 16), (40, 64), (300, 64)])
def test_store_kv_writes_strided_rows_into_their_slots(dtype, rows_dtype, tokens, head_dim):
    slots = 512
    k_buffer = torch.zeros(slots, 3, head_dim, dtype=dtype)
    v_buffer = torch.zeros(slots, 3, head_dim, dtype=dtype)
    expected_k, expected_v = k_buffer.clone(), v_buffer.clone()
    # k and v are strided views of one row, as in attention
    qkv = _randn(tokens, 9 * head_dim, seed=12)
    # Halfway between two bfloat16 values (rounded to the even one), a denormal: as torch.
    qkv[0, -4:] = torch.tensor([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 2**-130])
    qkv = qkv.to(rows_dtype)
    k = qkv[:, 3 * head_dim : 6 * head_dim].view(tokens, 3, head_dim)
    v = qkv[:, 6 * head_dim :].view(tokens, 3, head_dim)
    loc = torch.randperm(slots, generator=torch.Generator().manual_seed(3))[:tokens]
    ops.store_kv(k_buffer, v_buffer, loc, k, v)
    store_kv_reference(expected_k, expected_v, loc, k, v)
    assert torch.equal(k_buffer, expected_k) and torch.equal(v_buffer, expected_v)
    with pytest.raises(RuntimeError, match="slot out of range"):
        ops.store_kv(k_buffer, v_buffer, torch.tensor([slots] + [0] * (tokens - 1)), k, v)


def test_argmax_rows_picks_what_torch_max_picks():
    """The first maximum of each row (ties to the lowest id), -inf and masked rows included,
    and the first NaN where a row has one, as ``x.max(-1).indices``."""
    x = torch.randint(-3, 4, (40, 1000), generator=torch.Generator().manual_seed(9)).float()
    x[1] = float("-inf")  # every token banned
    x[2, 500:] = float("-inf")
    x[3, 7] = x[3, 900] = 50.0  # a tie
    x[4, 10] = x[4, 600] = float("nan")
    x[5, 0] = float("nan")
    x[6, -1] = 99.0
    assert torch.equal(ops.argmax_rows(x), x.max(dim=-1).indices)
    assert torch.equal(ops.argmax_rows(x[6:7]), torch.tensor([999]))
