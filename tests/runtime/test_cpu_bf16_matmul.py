"""The AVX512-BF16 dot-product matmul against a float64 product of the same bfloat16 operands:
any row count (whole and partial 8-row tiles, a second 192-row chunk), a zero-padded last
panel, input widths that are not a multiple of 16, and the same bits for a row alone as in any
batch; the linear layers take it for the int4 mode's dense copy. Skipped on CPUs without
AVX512-BF16."""

from __future__ import annotations

import pytest
import torch

from radixlm.kernels.cpu_bf16_matmul import load_cpu_bf16_matmul, pack_bf16_dot_weight
from radixlm.runtime.layers.dense_cpu import native_bf16_matmul
from radixlm.runtime.layers.linear import ColumnParallelLinear
from tests.runtime.bf16_matmul_checks import bf16_operands, check_bf16_product_and_batch_invariance

kernels = load_cpu_bf16_matmul()
pytestmark = pytest.mark.skipif(kernels is None, reason="no AVX512-BF16 (or no compiler) here")


@pytest.mark.parametrize("rows", [1, 3, 8, 9, 31, 32, 200])
@pytest.mark.parametrize(("out_features", "in_features"), [(48, 32), (40, 38), (960, 576)])
def test_matches_the_bf16_product_and_rows_are_batch_invariant(rows, out_features, in_features):
    x, weight = bf16_operands(rows, out_features, in_features)
    packed = pack_bf16_dot_weight(weight)
    check_bf16_product_and_batch_invariance(
        lambda rows: kernels.bf16_dot_matmul(rows, packed, out_features), x, weight, row_step=7
    )


def test_denormal_inputs_count_as_zero():
    """VDPBF16PS treats denormal operands as zero (documented in the module)."""
    x, weight = bf16_operands(2, 48, 64)
    x[0] = 0
    x[0, :20] = 3e-39  # a float32 denormal; bfloat16 keeps it (torch rounds it to 2.99e-39)
    weight[:, :20] = 1e30
    assert x.bfloat16()[0, 0] != 0
    out = kernels.bf16_dot_matmul(x, pack_bf16_dot_weight(weight), 48)
    assert torch.equal(out[0], torch.zeros(48))
    expected = x[1:].bfloat16().double() @ weight.bfloat16().double().T
    torch.testing.assert_close(out[1:].double(), expected, rtol=1e-5, atol=1e-4)


def test_checks_the_shapes():
    packed = pack_bf16_dot_weight(torch.randn(48, 64))
    with pytest.raises(RuntimeError, match="input width"):
        kernels.bf16_dot_matmul(torch.randn(1, 96), packed, 48)
    with pytest.raises(RuntimeError, match="float32"):
        kernels.bf16_dot_matmul(torch.randn(1, 64).double(), packed, 48)
    with pytest.raises(RuntimeError):
        kernels.bf16_dot_matmul(torch.randn(1, 64), packed, 49)


@pytest.mark.skipif(native_bf16_matmul(), reason="AMX CPUs take the AMX kernel")
def test_int4_linears_take_it_for_big_passes():
    linear = ColumnParallelLinear(576, [960])
    linear.weight.copy_(torch.randn(960, 576) * 0.05)
    linear.quantize_for_cpu("q4_1")
    dense = linear.cpu_weight.dense_copy
    assert dense.routes()[0].kernel is kernels.bf16_dot_matmul
