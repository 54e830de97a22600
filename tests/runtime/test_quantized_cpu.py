"""Quantized linears on CPU: Q4_1 / Q8_0 weights survive the re-packing exactly, the compiled
kernel computes what its reference says for any batch, the runner picks it for the default
GGUF, and the default model still answers like its float32 self."""

from __future__ import annotations

import pytest
import torch

from radixlm.kernels.cpu_bf16_matmul import load_cpu_bf16_matmul
from radixlm.kernels.cpu_quant_matmul import (
    BLOCK,
    dequantize_q4_1,
    dequantize_q8_0,
    load_cpu_quant_matmul,
    pack_q4_1,
    pack_q8_0,
)
from radixlm.kernels.reference import quantized_matmul_reference
from radixlm.runtime.layers.dense_cpu import native_bf16_matmul
from radixlm.runtime.layers.linear import ColumnParallelLinear
from radixlm.runtime.layers.quantized_cpu import KERNEL_MAX_ROWS
from radixlm.runtime.model_loader import ResolvedModel
from radixlm.runtime.model_runner import ModelRunner, resolve_quantization
from tests.runtime.test_model_vs_hf import run_prefill_then_decode

kernels = load_cpu_quant_matmul()
needs_kernel = pytest.mark.skipif(kernels is None, reason="no C++ compiler / AVX2 for the kernel")


def q4_1_weight(out_features: int, in_features: int, seed: int = 0):
    """A weight as llama.cpp's Q4_1 stores it: per block of 32, q in 0..15 with both 0 and 15
    present, fp16 scale d and minimum m; returns (q, d, m, dequantized float32 weight)."""
    gen = torch.Generator().manual_seed(seed)
    blocks = in_features // BLOCK
    q = torch.randint(0, 16, (out_features, blocks, BLOCK), generator=gen)
    q[..., 0], q[..., 1] = 0, 15
    d = (torch.rand(out_features, blocks, 1, generator=gen) * 0.02 + 5e-3).half().float()
    m = (-torch.rand(out_features, blocks, 1, generator=gen) * 0.1).half().float()
    weight = (q * d + m).reshape(out_features, in_features)
    return q, d, m, weight


def q8_0_weight(out_features: int, in_features: int, seed: int = 0):
    """A weight as Q8_0 stores it: per block, q in -127..127 with +-127 present, fp16 d."""
    gen = torch.Generator().manual_seed(seed)
    blocks = in_features // BLOCK
    q = torch.randint(-127, 128, (out_features, blocks, BLOCK), generator=gen)
    q[..., 0] = 127 * (torch.randint(0, 2, (out_features, blocks), generator=gen) * 2 - 1)
    d = (torch.rand(out_features, blocks, 1, generator=gen) * 1e-3 + 1e-4).half().float()
    return (q * d).reshape(out_features, in_features)


def test_q4_1_weights_are_repacked_without_loss():
    q, d, m, weight = q4_1_weight(192, 576)
    qs, dm = pack_q4_1(weight)
    assert qs.dtype == torch.uint8 and qs.shape == (192, 288)
    assert torch.equal(dequantize_q4_1(qs, dm), weight)
    assert torch.equal(dm[..., 0].float(), d[..., 0]) and torch.equal(dm[..., 1].float(), m[..., 0])


def test_q8_0_weights_are_repacked_without_loss():
    weight = q8_0_weight(160, 576, seed=1)
    qs, d = pack_q8_0(weight)
    assert qs.dtype == torch.int8 and qs.shape == weight.shape
    assert torch.equal(dequantize_q8_0(qs, d), weight)


def test_zero_blocks_pack_to_zero():
    weight = torch.zeros(4, 64)
    assert torch.equal(dequantize_q4_1(*pack_q4_1(weight)), weight)
    assert torch.equal(dequantize_q8_0(*pack_q8_0(weight)), weight)


@needs_kernel
@pytest.mark.parametrize("quant_format", ["q4_1", "q8_0"])
@pytest.mark.parametrize(("out_features", "in_features"), [(960, 576), (576, 1536), (40, 64)])
def test_kernel_matches_reference(quant_format, out_features, in_features):
    if quant_format == "q4_1":
        weight = q4_1_weight(out_features, in_features, seed=2)[3]
        qs, scales = pack_q4_1(weight)
        kernel = kernels.q4_1_matmul
    else:
        weight = q8_0_weight(out_features, in_features, seed=2)
        qs, scales = pack_q8_0(weight)
        kernel = kernels.q8_0_matmul
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(KERNEL_MAX_ROWS + 3, in_features, generator=gen) * torch.rand(
        KERNEL_MAX_ROWS + 3, 1, generator=gen
    )
    x[0, :BLOCK] = 0  # an all-zero activation block
    out = kernel(x, qs, scales, out_features)
    expected = quantized_matmul_reference(x, weight)
    # Exact int8 block products; only float32 sums are rounded.
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=2e-4)
    # ... and unquantized activations are close: two int8 parts are about bfloat16 precision.
    relative = (out - x @ weight.T).norm() / (x @ weight.T).norm()
    assert relative < 1e-4, relative
    # A row gets the same bits alone as in any batch.
    for rows in (1, 2, 5):
        assert torch.equal(kernel(x[:rows].contiguous(), qs, scales, out_features), out[:rows])


@needs_kernel
def test_kernel_checks_shapes():
    qs, dm = pack_q4_1(q4_1_weight(32, 64)[3])
    with pytest.raises(RuntimeError, match="input width"):
        kernels.q4_1_matmul(torch.randn(1, 96), qs, dm, 32)
    with pytest.raises(RuntimeError, match="out_features"):
        kernels.q4_1_matmul(torch.randn(1, 64), qs, dm, 33)


def test_big_passes_use_the_same_weights_in_a_dense_copy():
    """Rows beyond the kernel's limit go through a dense copy of the very same weights: float32,
    where the kernel's two-part int8 activations differ by about bfloat16 precision; on CPUs
    with AMX a bfloat16 copy of the kernel's own dequantized tiles, and with AVX512-BF16 dot
    products a bfloat16 copy for every pass: the same bits alone or batched."""
    _, _, _, weight = q4_1_weight(960, 576, seed=5)
    linear = ColumnParallelLinear(576, [960])
    linear.weight.copy_(weight)
    linear.quantize_for_cpu("q4_1")
    rows = linear.cpu_weight.max_kernel_rows + 16
    x = torch.randn(rows, 576, generator=torch.Generator().manual_seed(6))
    big = linear(x)
    assert big.dtype == torch.float32
    bf16_copy = native_bf16_matmul() or load_cpu_bf16_matmul() is not None
    if bf16_copy:
        bf16 = x.bfloat16().double() @ weight.bfloat16().double().T
        torch.testing.assert_close(big.double(), bf16, rtol=1e-5, atol=1e-4)
    else:
        torch.testing.assert_close(big, x @ weight.T, rtol=1e-5, atol=1e-5)
    alone = torch.cat([linear(row) for row in x.split(1)])
    if bf16_copy:  # the AMX kernel or the dot-product copy at every size: the same bits
        assert torch.equal(alone, big)
    else:
        assert (alone - big).norm() / big.norm() < 1e-4


def _resolved(types: tuple[str, ...]) -> ResolvedModel:
    return ResolvedModel("/m", "/m", "safetensors", "m", types)


F32, BF16 = torch.float32, torch.bfloat16


@pytest.mark.parametrize(
    ("requested", "device", "dtype", "types", "chosen"),
    [
        ("auto", "cpu", F32, ("Q4_1",), "int4"),
        ("auto", "cpu", F32, ("Q4_0", "Q4_1"), "none"),  # Q4_0 blocks are not min/max exact
        ("auto", "cpu", F32, (), "none"),  # float checkpoint
        ("auto", "cpu", BF16, ("Q4_1",), "none"),  # no float32 copy for prefill
        ("auto", "cuda", BF16, ("Q4_1",), "none"),
        ("int4", "cpu", F32, (), "int4"),
        ("none", "cpu", F32, ("Q4_1",), "none"),
    ],
)
def test_quantization_policy(requested, device, dtype, types, chosen):
    resolved = _resolved(types)
    assert resolve_quantization(requested, torch.device(device), dtype, resolved) == chosen


def test_quantization_errors_name_the_problem():
    with pytest.raises(ValueError, match="CPU with --dtype float32"):
        resolve_quantization("int4", torch.device("cuda"), BF16, _resolved(()))
    with pytest.raises(ValueError, match="unknown quantization"):
        resolve_quantization("awq", torch.device("cpu"), F32, _resolved(()))


@pytest.fixture(scope="module")
def int4_runner(default_model):
    from radixlm.runtime.model_config import ModelConfig

    config = ModelConfig.from_dir(default_model.model_dir)
    return ModelRunner(
        config,
        default_model,
        max_total_tokens=1024,
        max_running_requests=8,
        context_len=512,
        quantization="auto",
    )


def test_default_model_runs_int4_and_agrees_with_float32(
    default_model, int4_runner, smollm_runner, driver_for
):
    assert default_model.source_weight_types == ("Q4_1",)
    assert int4_runner.quantization == "int4"
    # The prefill has more rows than the kernel takes (dense copy), the decode steps one.
    # Natural text: on random ids the next-token distributions are flat, so near-ties flip
    # under any rounding; natural text measures what a user sees.
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(f"{default_model.tokenizer_dir}/tokenizer.json")
    ids = tokenizer.encode(ENGLISH_TEXT).ids[:208]
    assert len(ids) == 208
    ours = run_prefill_then_decode(driver_for(int4_runner), ids, num_prefill=200)
    ref = run_prefill_then_decode(driver_for(smollm_runner), ids, num_prefill=200)
    # Same layer weights, an 8-bit LM head and two-part int8 activation blocks in the decode
    # steps: close, not equal.
    per_row = (ours - ref).abs().amax(dim=-1) / ref.abs().amax(dim=-1)
    assert per_row.median() < 0.05, per_row
    top1_agreement = (ours.argmax(-1) == ref.argmax(-1)).float().mean().item()
    assert top1_agreement >= 0.95, top1_agreement


ENGLISH_TEXT = " ".join(
    [
        "The history of the printing press begins in the fifteenth century, when Johannes",
        "Gutenberg combined a screw press with movable metal type, oil-based ink and a mould",
        "for casting letters quickly. Before that, books were copied by hand, which made them",
        "rare and expensive. Within fifty years presses were running in more than two hundred",
        "cities across Europe, and millions of volumes had been printed. Cheap books changed",
        "how people learned, argued and worshipped: scholars could compare the same text in",
        "different cities, merchants kept printed price lists, and pamphlets spread news and",
        "opinion faster than any messenger. Historians still debate how quickly literacy rose",
        "as a result, but few doubt that the press helped to start the scientific revolution,",
        "the Reformation and the modern newspaper. Today the same questions come back with every",
        "new technology that makes copying cheaper: who controls it, who profits from it, and",
        "what happens to the people whose work it replaces. The answers are rarely simple.",
        "Libraries, once chained to their desks, opened their doors; universities multiplied;",
        "and the idea that knowledge should be shared widely slowly became common sense.",
    ]
)


def test_int4_decode_batch_agrees_with_solo(int4_runner, driver_for):
    """Kernel rows are batch-invariant, but bfloat16 K/V written by a batched prefill may differ
    in the last bit from a solo one, and int8 activation blocks magnify that: rows agree within
    that noise and on their greedy token, not bit for bit."""
    driver = driver_for(int4_runner)
    prompts = [[1, 2, 3, 4, 5], [9, 8, 7], [42] * 11]
    solo = []
    for ids in prompts:
        seq = driver.new_seq()
        driver.extend([(seq, ids)])
        solo.append(driver.decode([(seq, 100)])[0])
    seqs = [driver.new_seq() for _ in prompts]
    driver.extend(list(zip(seqs, prompts, strict=True)))
    together = driver.decode([(seq, 100) for seq in seqs])
    for row, expected in enumerate(solo):
        assert together[row].argmax() == expected.argmax()
        relative = ((together[row] - expected).abs().max() / expected.abs().max()).item()
        assert relative < 0.05, relative
