"""The compiled float32 CPU matmul against F.linear: any shape, the same bits in any batch or
thread count, and the linear layers on either path (kernel, or oneDNN without a compiler)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from radixlm.kernels.cpu_dense_matmul import load_cpu_dense_matmul, pack_dense_weight
from radixlm.runtime.layers import dense_cpu
from radixlm.runtime.layers.linear import ColumnParallelLinear

kernels = load_cpu_dense_matmul()
needs_kernel = pytest.mark.skipif(kernels is None, reason="no C++ compiler / AVX2 for the kernel")


def _operands(rows: int, out_features: int, in_features: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(rows, in_features, generator=gen),
        torch.randn(out_features, in_features, generator=gen),
    )


def _matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return kernels.dense_matmul(x, pack_dense_weight(weight), weight.shape[0])


@needs_kernel
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 7, 13, 200, 389])  # tiles of 4, remainders, chunks
@pytest.mark.parametrize(("out_features", "in_features"), [(1, 1), (17, 7), (48, 64), (100, 576)])
def test_matches_f_linear(rows, out_features, in_features):
    x, weight = _operands(rows, out_features, in_features)
    out = _matmul(x, weight)
    assert out.shape == (rows, out_features)
    expected = F.linear(x.double(), weight.double()).float()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5 * in_features**0.5)


@needs_kernel
def test_a_row_gets_the_same_bits_in_any_batch_and_thread_count():
    x, weight = _operands(37, 80, 96, seed=1)
    packed = pack_dense_weight(weight)
    batched = kernels.dense_matmul(x, packed, 80)
    for row in (0, 6, 35, 36):
        alone = kernels.dense_matmul(x[row : row + 1].contiguous(), packed, 80)
        assert torch.equal(alone[0], batched[row])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(kernels.dense_matmul(x, packed, 80), batched)
    finally:
        torch.set_num_threads(threads)


@needs_kernel
def test_rejects_a_mismatched_input_width():
    x, weight = _operands(4, 16, 32)
    with pytest.raises(RuntimeError, match="input width"):
        kernels.dense_matmul(x[:, :31].contiguous(), pack_dense_weight(weight), 16)


@pytest.mark.parametrize("use_kernel", [True, False])
def test_linear_layer_on_either_path(monkeypatch, use_kernel):
    if use_kernel and kernels is None:
        pytest.skip("no C++ compiler / AVX2 for the kernel")
    if not use_kernel:  # a machine without a compiler: oneDNN's packed layout
        monkeypatch.setattr(dense_cpu, "load_cpu_dense_matmul", lambda: None)
    layer = ColumnParallelLinear(64, [24, 8], bias=True)
    x, weight = _operands(9, 32, 64, seed=2)
    bias = torch.randn(32, generator=torch.Generator().manual_seed(3))
    layer.weight.data.copy_(weight)
    layer.bias.data.copy_(bias)
    expected = F.linear(x, weight, bias)
    layer.prepack_for_cpu()
    assert layer.weight is None
    assert isinstance(layer.cpu_weight, dense_cpu.KernelCpuWeight) == use_kernel
    torch.testing.assert_close(layer(x.view(3, 3, 64)), expected.view(3, 3, 32))
