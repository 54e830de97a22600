"""Weight-only int4 on CPU: Q4_1 weights survive the re-packing exactly, the runner picks it
for the default GGUF, and the default model still answers like its float32 self."""

from __future__ import annotations

import pytest
import torch

from radixlm.runtime.layers.int4_cpu import GROUP_SIZE, INT4_MAX_ROWS, Int4Weight
from radixlm.runtime.layers.linear import ColumnParallelLinear
from radixlm.runtime.model_loader import ResolvedModel
from radixlm.runtime.model_runner import ModelRunner, resolve_quantization
from tests.runtime.test_model_vs_hf import run_prefill_then_decode


def q4_1_weight(out_features: int, in_features: int, seed: int = 0):
    """A weight as llama.cpp's Q4_1 stores it: per block of 32, q in 0..15 with both 0 and 15
    present, fp16 scale d and minimum m; returns (q, d, m, dequantized float32 weight)."""
    gen = torch.Generator().manual_seed(seed)
    blocks = in_features // GROUP_SIZE
    q = torch.randint(0, 16, (out_features, blocks, GROUP_SIZE), generator=gen)
    q[..., 0], q[..., 1] = 0, 15
    d = (torch.rand(out_features, blocks, 1, generator=gen) * 0.02 + 5e-3).half().float()
    m = (-torch.rand(out_features, blocks, 1, generator=gen) * 0.1).half().float()
    weight = (q * d + m).reshape(out_features, in_features)
    return q, d, m, weight


def test_q4_1_weights_are_repacked_without_loss():
    q, d, m, weight = q4_1_weight(192, 576)
    # Identity rows read the dequantized weight back, one element per output.
    out = Int4Weight(weight).matmul(torch.eye(576))
    assert out.dtype == torch.float32
    # What the kernel holds if it recovered every q exactly: scales and zeros in bfloat16.
    scale = d.to(torch.bfloat16).float()
    zero = (m + 8 * d).to(torch.bfloat16).float()
    expected = ((q - 8) * scale + zero).reshape(weight.shape).T
    # The output is rounded to bfloat16 (|w| <= 0.42: an ulp <= 0.002); a q off by one would
    # be off by d >= 0.005.
    torch.testing.assert_close(out, expected, rtol=0, atol=2.5e-3)
    assert (out - weight.T).abs().max() < 2.5e-3  # and so is the original Q4_1 weight


def test_int4_rows_do_not_depend_on_their_batch_neighbours():
    _, _, _, weight = q4_1_weight(960, 576, seed=2)
    packed = Int4Weight(weight)
    x = torch.randn(INT4_MAX_ROWS, 576, generator=torch.Generator().manual_seed(3))
    full = packed.matmul(x)
    for rows in range(1, INT4_MAX_ROWS):
        assert torch.equal(packed.matmul(x[:rows]), full[:rows])


def test_big_passes_use_the_same_weights_in_float32():
    """Rows beyond INT4_MAX_ROWS go through the float32 copy; they must get what the int4
    kernel gives each row alone, up to float32 summation order (one bfloat16 ulp)."""
    _, _, _, weight = q4_1_weight(960, 576, seed=5)
    linear = ColumnParallelLinear(576, [960])
    linear.weight.copy_(weight)
    linear.quantize_int4_for_cpu()
    x = torch.randn(INT4_MAX_ROWS + 16, 576, generator=torch.Generator().manual_seed(6))
    big = linear(x)
    alone = torch.cat([linear(row) for row in x.split(1)])
    assert INT4_MAX_ROWS < len(x)
    relative = (big - alone).abs() / alone.abs().clamp(min=1e-3)
    assert relative.max() <= 2**-7, relative.max()
    assert (big == alone).float().mean() > 0.9


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
    # The prefill has more rows than INT4_MAX_ROWS (float32 copy), the decode steps one (int4).
    ids = torch.randint(0, 49152, (208,), generator=torch.Generator().manual_seed(4)).tolist()
    ours = run_prefill_then_decode(driver_for(int4_runner), ids, num_prefill=200)
    ref = run_prefill_then_decode(driver_for(smollm_runner), ids, num_prefill=200)
    # Same weights, bfloat16 matmul inputs and outputs (like HF in bfloat16): close, not equal.
    per_row = (ours - ref).abs().amax(dim=-1) / ref.abs().amax(dim=-1)
    assert per_row.median() < 0.03, per_row
    top1_agreement = (ours.argmax(-1) == ref.argmax(-1)).float().mean().item()
    assert top1_agreement >= 0.9, top1_agreement


def test_int4_decode_batch_agrees_with_solo(int4_runner, driver_for):
    """Matmul rows are batch-invariant, but padded decode attention is not bit-exact and the
    bfloat16 rounding before each matmul magnifies that: rows agree within bf16 noise and on
    their greedy token, not bit for bit."""
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
