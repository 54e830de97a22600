"""What every bfloat16 CPU matmul kernel's tests check (AMX tiles, AVX512-BF16 dot products)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def bf16_operands(rows: int, out_features: int, in_features: int):
    """(x, weight): float32 inputs and a weight of a trained layer's scale, seeded by shape."""
    gen = torch.Generator().manual_seed(rows * 1000 + out_features)
    return (
        torch.randn(rows, in_features, generator=gen),
        torch.randn(out_features, in_features, generator=gen) * 0.05,
    )


def check_bf16_product_and_batch_invariance(
    matmul: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    weight: torch.Tensor,
    row_step: int = 1,
) -> None:
    """``matmul(x)`` equals a float64 product of the bfloat16-rounded operands up to float32
    sums, and every ``row_step``-th row (and all but the first) gets the same bits alone."""
    rows, in_features = x.shape
    out = matmul(x)
    assert out.shape == (rows, weight.shape[0]) and out.dtype == torch.float32
    # bfloat16 products are exact; only the float32 sums round.
    expected = x.bfloat16().double() @ weight.bfloat16().double().T
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5 * in_features**0.5)
    for row in range(0, rows, row_step):
        assert torch.equal(matmul(x[row : row + 1])[0], out[row]), row
    assert torch.equal(matmul(x[1:]), out[1:])
