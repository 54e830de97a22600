"""The whole GPU model path (our layers, fused kernels, attention backends, CUDA graphs) against
HF transformers on the same random weights, small configs.

float32 (Triton backend, exact dots): greedy tokens must equal HF's for 32 steps.
bfloat16 (both backends, graphs on): logits within bf16 tolerance of HF's at every step where
both have seen the same tokens; the greedy streams may part only where HF's own top-2 margin
is inside that tolerance (a near-tie that rounding may break either way).
A radix-cache hit (prefix slots shared with another sequence) must give the same result as
computing the whole prompt.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")
transformers = pytest.importorskip("transformers")

from radixlm.runtime.model_config import ModelConfig  # noqa: E402
from radixlm.runtime.model_loader import ResolvedModel  # noqa: E402
from radixlm.runtime.model_runner import ModelRunner  # noqa: E402
from tests.gpu.driver import Driver  # noqa: E402

pytestmark = pytest.mark.gpu

NUM_STEPS = 32
# SmolLM2-like (GQA 3, head 64, tied) and Qwen2-like (GQA 4, head 128, q/k/v biases, untied).
HF_CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(
        vocab_size=1024,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=4,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
        tie_word_embeddings=True,
    ),
    "qwen2": lambda: transformers.Qwen2Config(
        vocab_size=1024,
        hidden_size=512,
        intermediate_size=1024,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        rope_theta=1000000.0,
        tie_word_embeddings=False,
    ),
}
PROMPT_LENS = (5, 37, 100)  # three prompts: the decode graph of size 4 runs one padding row


def flashinfer_mark() -> list:
    try:
        import flashinfer  # noqa: F401
    except ImportError:
        return [pytest.mark.skip("flashinfer missing")]
    return []


def backends() -> list:
    return [pytest.param("triton"), pytest.param("flashinfer", marks=flashinfer_mark())]


def make_hf_model(kind: str, dtype: torch.dtype, folder: Path):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(HF_CONFIGS[kind](), dtype=torch.float32)
    # HF initialises norms to 1 and biases to 0; random values make the comparison see them.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.normal_(1.0 if "norm" in name else 0.0, 0.1)
    model = model.to(device="cuda", dtype=dtype).eval()
    model.save_pretrained(folder)
    return model


def make_runner(folder: Path, dtype, backend: str, graphs: bool) -> ModelRunner:
    resolved = ResolvedModel(str(folder), str(folder), "safetensors", "tiny")
    return ModelRunner(
        ModelConfig.from_dir(str(folder)),
        resolved,
        device="cuda",
        dtype=dtype,
        attention_backend=backend,
        max_total_tokens=8192,
        max_running_requests=8,
        context_len=512,
        cuda_graph_max_bs=8 if graphs else None,
    )


@torch.inference_mode()
def hf_greedy(model, prompt: list[int], num_steps: int) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy tokens and each step's float32 logits, recomputing the whole sequence each step."""
    ids = torch.tensor([prompt], device="cuda")
    tokens, logits = [], []
    for _ in range(num_steps):
        step = model(ids).logits[0, -1].float()
        logits.append(step)
        tokens.append(int(step.argmax()))
        ids = torch.cat([ids, ids.new_tensor([[tokens[-1]]])], dim=1)
    return tokens, logits


def prompts(seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(1024) for _ in range(n)] for n in PROMPT_LENS]


@pytest.mark.parametrize("kind", sorted(HF_CONFIGS))
@pytest.mark.parametrize("graphs", [True, False], ids=["graphs", "eager"])
def test_float32_greedy_tokens_equal_hf(kind, graphs, tmp_path):
    hf = make_hf_model(kind, torch.float32, tmp_path)
    runner = make_runner(tmp_path, torch.float32, "triton", graphs)
    assert (runner.cuda_graph_runner is not None) == graphs
    batch_prompts = prompts(seed=1)
    ours, our_logits = Driver(runner).greedy(batch_prompts, NUM_STEPS)
    for i, prompt in enumerate(batch_prompts):
        expected, hf_logits = hf_greedy(hf, prompt, NUM_STEPS)
        assert ours[i] == expected, f"prompt {i}"
        diff = max((our_logits[s][i] - hf_logits[s]).abs().max().item() for s in range(NUM_STEPS))
        assert diff < 1e-3, diff


@pytest.mark.parametrize("kind", sorted(HF_CONFIGS))
@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("num_prompts", [3, 1])  # batch 1 runs the one-row GEMV path
def test_bfloat16_logits_within_tolerance_of_hf(kind, backend, num_prompts, tmp_path):
    hf = make_hf_model(kind, torch.bfloat16, tmp_path)
    runner = make_runner(tmp_path, torch.bfloat16, backend, graphs=True)
    batch_prompts = prompts(seed=2)[-num_prompts:]
    ours, our_logits = Driver(runner).greedy(batch_prompts, NUM_STEPS)
    for i, prompt in enumerate(batch_prompts):
        expected, hf_logits = hf_greedy(hf, prompt, NUM_STEPS)
        scale = torch.stack(hf_logits).std().item()
        # Two bf16 implementations differ by rounding, not by a constant: a few percent of the
        # logits' spread. A wrong mask, position or head mapping moves them by O(scale).
        tol = 0.08 * scale
        for step in range(NUM_STEPS):
            diff = (our_logits[step][i] - hf_logits[step]).abs().max().item()
            assert diff < tol, f"prompt {i} step {step}: |diff| {diff:.4f} vs tol {tol:.4f}"
            if ours[i][step] != expected[step]:
                top2 = hf_logits[step].topk(2).values
                margin = (top2[0] - top2[1]).item()
                assert margin < 2 * tol, f"prompt {i} step {step}: parted at margin {margin}"
                break  # the contexts differ from here on


@pytest.mark.parametrize(
    "dtype,backend",
    [
        pytest.param(torch.float32, "triton", id="float32-triton"),
        pytest.param(torch.bfloat16, "triton", id="bfloat16-triton"),
        pytest.param(
            torch.bfloat16, "flashinfer", id="bfloat16-flashinfer", marks=flashinfer_mark()
        ),
    ],
)
def test_radix_shared_prefix_gives_the_same_output_as_unshared(dtype, backend, tmp_path):
    make_hf_model("llama", dtype, tmp_path)
    runner = make_runner(tmp_path, dtype, backend, graphs=True)
    driver = Driver(runner, seed=3)
    rng = random.Random(4)
    system = [rng.randrange(1024) for _ in range(200)]
    question = [rng.randrange(1024) for _ in range(20)]
    # Unshared: the whole prompt in one prefill.
    alone = driver.new_seq()
    first = driver.extend([(alone, system + question)])
    # Shared: another sequence computed the system prompt; ours lists those slots and only
    # prefills the question (in the same batch as an unrelated prompt).
    cached = driver.new_seq()
    driver.extend([(cached, system)])
    hit = driver.new_seq(share_prefix_of=cached, prefix_len=len(system))
    other = driver.new_seq()
    first_hit = driver.extend([(other, question[:7]), (hit, question)])[1:]
    # Both are fed the unshared run's greedy tokens, so their contexts stay identical.
    tokens = [int(first[0].argmax())]
    logits_alone, logits_hit = [first[0]], [first_hit[0]]
    for _ in range(15):
        step = driver.decode([(alone, tokens[-1]), (hit, tokens[-1])])
        logits_alone.append(step[0])
        logits_hit.append(step[1])
        tokens.append(int(step[0].argmax()))
    scale = torch.stack(logits_alone).std().item()
    diff = max((a - b).abs().max().item() for a, b in zip(logits_alone, logits_hit, strict=True))
    tol = (1e-4 if dtype == torch.float32 else 0.05) * scale
    assert diff < tol, (diff, tol)
    if dtype == torch.float32:
        assert [int(x.argmax()) for x in logits_hit] == tokens
