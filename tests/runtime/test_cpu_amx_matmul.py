"""The AMX bfloat16 matmul against a float64 product of the same bfloat16 operands: any row
count (whole and partial row tiles), partial output blocks, either activation dtype, and the
same bits for a row alone as in any batch; its Q4_1 form (tiles dequantized on the way)
equals it on the dequantized tiles, bit for bit; the SwiGLU epilogue equals the separate
silu_and_mul, bit for bit. Skipped on CPUs without AMX."""

from __future__ import annotations

import pytest
import torch

from radixlm.kernels.cpu_amx_matmul import (
    interleave_gate_up,
    load_cpu_amx_matmul,
    pack_amx_q4_1,
    pack_amx_weight,
)
from radixlm.kernels.cpu_layer_ops import load_cpu_layer_ops
from radixlm.kernels.cpu_quant_matmul import dequantize_q4_1, pack_q4_1
from radixlm.runtime.layers import dense_cpu
from radixlm.runtime.layers.activation import silu_and_mul
from radixlm.runtime.layers.linear import ColumnParallelLinear
from tests.runtime.bf16_matmul_checks import bf16_operands, check_bf16_product_and_batch_invariance

kernels = load_cpu_amx_matmul()
pytestmark = pytest.mark.skipif(kernels is None, reason="no AMX tiles (or no compiler) here")


@pytest.mark.parametrize("rows", [1, 3, 16, 17, 31, 32, 33, 70])
@pytest.mark.parametrize(("out_features", "in_features"), [(32, 32), (40, 64), (960, 576)])
def test_matches_the_bf16_product_and_rows_are_batch_invariant(rows, out_features, in_features):
    x, weight = bf16_operands(rows, out_features, in_features)
    packed = pack_amx_weight(weight)
    check_bf16_product_and_batch_invariance(
        lambda rows: kernels.amx_matmul(rows, packed, out_features), x, weight
    )


def test_bf16_activations_come_back_in_bf16():
    x, weight = bf16_operands(5, 64, 96)
    packed = pack_amx_weight(weight)
    out = kernels.amx_matmul(x.bfloat16(), packed, 64)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, kernels.amx_matmul(x.bfloat16().float(), packed, 64).bfloat16())


def test_checks_the_input_width():
    packed = pack_amx_weight(torch.randn(32, 64))
    with pytest.raises(RuntimeError, match="input width"):
        kernels.amx_matmul(torch.randn(2, 96), packed, 32)


def test_bf16_linears_use_it():
    with torch.device("cpu"):
        layer = ColumnParallelLinear(64, [40]).to(torch.bfloat16)
    weight = torch.randn(40, 64).bfloat16()
    with torch.no_grad():
        layer.weight.copy_(weight)
    layer.prepack_for_cpu()
    assert isinstance(layer.cpu_weight, dense_cpu.KernelCpuWeight)
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    torch.testing.assert_close(layer(x), (x.float() @ weight.float().T).bfloat16())


def _q4_1_operands(out_features: int, in_features: int):
    weight = torch.randn(out_features, in_features, generator=torch.Generator().manual_seed(7))
    qs, dm = pack_q4_1(weight * 0.05)
    return qs, dm, dequantize_q4_1(qs, dm)


@pytest.mark.parametrize(("out_features", "in_features"), [(32, 32), (40, 64), (960, 576)])
def test_q4_1_tiles_dequantize_to_the_blocks_values(out_features, in_features):
    qs, dm, dequantized = _q4_1_operands(out_features, in_features)
    tiles = kernels.amx_q4_1_to_bf16(*pack_amx_q4_1(qs, dm))
    expected = pack_amx_weight(dequantized)
    assert tiles.shape == expected.shape
    # fma(q, d, m) rounds once where d * q + m in float32 rounds twice: within a bf16 step.
    torch.testing.assert_close(tiles.float(), expected.float(), rtol=2**-7, atol=1e-6)


@pytest.mark.parametrize("rows", [1, 2, 17, 33, 64])
@pytest.mark.parametrize(("out_features", "in_features"), [(40, 64), (960, 576)])
def test_q4_1_matmul_equals_the_bf16_copy_bit_for_bit(rows, out_features, in_features):
    qs, dm, _ = _q4_1_operands(out_features, in_features)
    q, scales = pack_amx_q4_1(qs, dm)
    x = torch.randn(rows, in_features, generator=torch.Generator().manual_seed(rows))
    fused = kernels.amx_q4_1_matmul(x, q, scales, out_features)
    copy = kernels.amx_matmul(x, kernels.amx_q4_1_to_bf16(q, scales), out_features)
    assert fused.shape == (rows, out_features)
    assert torch.equal(fused, copy)


@pytest.mark.parametrize("rows", [1, 7, 16, 31, 33, 70])
def test_silu_epilogue_equals_the_separate_silu_and_mul_bit_for_bit(rows):
    ops = load_cpu_layer_ops()
    x, weight = bf16_operands(rows, 2 * 96, 64)  # fused [gate | up] of an MLP of width 96
    expected = ops.silu_and_mul(kernels.amx_matmul(x, pack_amx_weight(weight), 2 * 96))
    fused = kernels.amx_matmul_silu(x, pack_amx_weight(interleave_gate_up(weight)), 2 * 96)
    assert fused.shape == (rows, 96) and torch.equal(fused, expected)
    q_plain = pack_amx_q4_1(*pack_q4_1(weight))
    q_fused = pack_amx_q4_1(*pack_q4_1(interleave_gate_up(weight)))
    q_expected = ops.silu_and_mul(kernels.amx_q4_1_matmul(x, *q_plain, 2 * 96))
    assert torch.equal(kernels.amx_q4_1_matmul_silu(x, *q_fused, 2 * 96), q_expected)


def test_interleave_gate_up_pairs_each_16_gates_with_their_ups():
    weight = torch.arange(64, dtype=torch.float32)[:, None].expand(64, 4)  # row i holds i
    rows = interleave_gate_up(weight)[:, 0].tolist()
    assert rows[:32] == list(range(16)) + list(range(32, 48))
    assert rows[32:] == list(range(16, 32)) + list(range(48, 64))


@pytest.mark.parametrize("quantize", [False, True])
def test_swiglu_projections_fuse_the_gate_and_keep_their_values(quantize):
    """A fused gate/up marked ``swiglu`` returns silu(gate) * up, the same bits as the unfused
    projection followed by silu_and_mul, whether packed (bf16) or int4-quantized. (With
    bfloat16 activations the gate and up are no longer rounded to bfloat16 on the way: only the
    result is, as the unfused projection taken in float32.)"""
    weight = torch.randn(2 * 48, 64, generator=torch.Generator().manual_seed(3)) * 0.05
    layers = []
    for swiglu in (False, True):
        with torch.device("cpu"):
            layer = ColumnParallelLinear(64, [48, 48])
        layer = layer if quantize else layer.to(torch.bfloat16)
        with torch.no_grad():
            layer.weight.copy_(weight)
        layer.swiglu = swiglu
        layer.quantize_for_cpu("q4_1") if quantize else layer.prepack_for_cpu()
        layers.append(layer)
    plain, fused = layers
    assert fused.silu_fused and not plain.silu_fused
    for rows in (1, 40):  # the Q4_1 tiles' kernel and the bf16 copy
        x = torch.randn(rows, 64, dtype=torch.float32 if quantize else torch.bfloat16)
        expected = silu_and_mul(plain(x.float())).to(x.dtype)
        assert torch.equal(fused(x), expected)


@pytest.mark.parametrize("rows", [2, 200])  # converted on the calling thread, and in parallel
def test_float32_activations_round_to_bfloat16_as_torch_does(rows):
    """The kernel rounds float32 activations itself: an identity weight gives them back
    exactly as ``x.bfloat16()`` does, ties (low half 0x8000) to even included."""
    gen = torch.Generator().manual_seed(5)
    exponent = torch.randint(110, 140, (rows, 384), generator=gen, dtype=torch.int32)
    mantissa = torch.randint(0, 2**23, (rows, 384), generator=gen, dtype=torch.int32)
    mantissa[:, ::3] = (mantissa[:, ::3] & ~0xFFFF) | 0x8000  # halfway between two bfloat16
    x = ((exponent << 23) | mantissa).view(torch.float32)  # normal, 1e-8 .. 1e4
    x[:, 1::2] = -x[:, 1::2]
    out = kernels.amx_matmul(x, pack_amx_weight(torch.eye(384)), 384)
    assert torch.equal(out, x.bfloat16().float())
