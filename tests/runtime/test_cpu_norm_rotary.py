"""The compiled CPU RMSNorm / rotary ops against their pure-torch references."""

from __future__ import annotations

import pytest
import torch

from radixlm.kernels.cpu_norm_rotary import cpu_norm_rotary_for, load_cpu_norm_rotary
from radixlm.kernels.reference import rmsnorm_reference, rotary_reference

ops = load_cpu_norm_rotary()
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


def test_ops_are_offered_for_float32_cpu_tensors_only():
    assert cpu_norm_rotary_for(torch.ones(2)) is ops
    assert cpu_norm_rotary_for(torch.ones(2), torch.ones(2, dtype=torch.bfloat16)) is None
