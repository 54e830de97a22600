"""Pure parts: scoring methods, sampling merge rules, template lookup, server flags, imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

import radixlm as rl
from radixlm.backend.launched_server import server_flags
from radixlm.chat_templates import (
    chat_template_for_model,
    get_chat_template,
    get_chat_template_by_model_path,
)
from radixlm.choices import mean_logprob
from radixlm.sampling import SamplingOverrides, resolve, run_defaults


def entries(*logprobs):
    return [[lp, i, f"t{i}"] for i, lp in enumerate(logprobs)]


def scored(method, rows, unconditional=None):
    return method(
        choices=[f"c{i}" for i in range(len(rows))],
        normalized_prompt_logprobs=[mean_logprob(r) for r in rows],
        input_token_logprobs=rows,
        output_token_logprobs=[[] for _ in rows],
        unconditional_token_logprobs=unconditional,
    )


def test_mean_logprob_skips_nulls():
    assert mean_logprob(entries(None, -1.0, -3.0)) == -2.0
    assert mean_logprob(entries(None)) == float("-inf")


def test_token_length_normalized_prefers_the_best_mean():
    rows = [entries(None, -1.0, -1.0), entries(None, -0.5, -3.0), entries(None, -0.9)]
    decision = scored(rl.token_length_normalized, rows)
    assert decision.decision == "c2"
    assert decision.meta_info["normalized_prompt_logprobs"][2] == -0.9


def test_greedy_breaks_ties_token_by_token_and_pads_with_the_mean():
    rows = [entries(None, -0.1, -5.0), entries(None, -0.1, -0.2), entries(None, -0.3)]
    decision = scored(rl.greedy_token_selection, rows)
    assert decision.decision == "c1"
    # The short third row is padded with its own mean.
    assert decision.meta_info["greedy_logprob_matrix"][2] == [-0.3, -0.3]


def test_unconditional_normalization_rewards_what_the_prompt_makes_likely():
    rows = [entries(None, -1.0, -1.0), entries(None, -2.0, -2.0)]
    # c0 is likely anyway; c1 is far likelier with the prompt than without.
    unconditional = [entries(None, -1.1, -1.1), entries(None, -6.0, -6.0)]
    decision = scored(rl.unconditional_likelihood_normalized, rows, unconditional)
    assert decision.decision == "c1"
    assert decision.meta_info["normalized_unconditional_prompt_logprobs"] == pytest.approx(
        [0.1, 4.0]
    )
    with pytest.raises(ValueError, match="unconditional"):
        scored(rl.unconditional_likelihood_normalized, rows)


def test_sampling_resolution_rules():
    defaults = run_defaults(max_new_tokens=10, stop="END", temperature=0.0)
    assert defaults.stop == "END" and defaults.stop_token_ids == []
    params = resolve(defaults, SamplingOverrides(), ("<|im_end|>",))
    assert params.stop == ["END", "<|im_end|>"] and params.max_new_tokens == 10
    params = resolve(defaults, SamplingOverrides(stop=["x"], temperature=0.7), ())
    assert params.stop == ["x"] and params.temperature == 0.7
    assert resolve(run_defaults(), SamplingOverrides(), ()).stop == []


@pytest.mark.parametrize(
    ("model_path", "template"),
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "chatml"),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct", "llama-3-instruct"),
        ("meta-llama/Llama-2-7b-chat-hf", "llama-2-chat"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistral"),
        ("Qwen/Qwen2.5-7B-Instruct", "qwen"),
        ("google/gemma-2-9b-it", "gemma-it"),
        ("lmsys/vicuna-7b-v1.5", "vicuna_v1.1"),
        ("deepseek-ai/DeepSeek-V3", "deepseek-v3"),
        ("deepseek-ai/DeepSeek-V3-Base", "default"),
        ("gpt2", "default"),
    ],
)
def test_template_by_model_path(model_path, template):
    assert get_chat_template_by_model_path(model_path).name == template


def test_template_choice_order_name_then_path_then_jinja():
    jinja = "{% for m in messages %}<|start_header_id|>{{ m.role }}...{% endfor %}"
    assert chat_template_for_model({"model_path": "/models/x", "chat_template": jinja}).name == (
        "llama-3-instruct"
    )
    info = {"model_path": "Qwen/Qwen2-7B-Instruct", "chat_template": jinja}
    assert chat_template_for_model(info).name == "qwen"
    assert chat_template_for_model(info, "mistral").name == "mistral"
    assert chat_template_for_model({"model_path": "/models/x"}).name == "default"
    with pytest.raises(ValueError, match="known: .*chatml"):
        get_chat_template("no-such-template")


def test_registering_a_custom_template():
    custom = rl.ChatTemplate("test-custom", None, {"user": ("<u>", "</u>")}, stop_str=("</a>",))
    rl.register_chat_template(custom)
    assert get_chat_template("test-custom").get_prompt([{"role": "user", "content": "hi"}]) == (
        "<u>hi</u>"
    )


def test_server_flags():
    args = {
        "model_path": None,
        "port": 30000,
        "disable_radix_cache": True,
        "enable_metrics": False,
        "max_total_tokens": 4096,
        "lora_paths": ["a", "b"],
    }
    assert server_flags(args) == [
        "--port",
        "30000",
        "--disable-radix-cache",
        "--max-total-tokens",
        "4096",
        "--lora-paths",
        "a",
        "b",
    ]


def test_importing_radixlm_loads_neither_torch_nor_the_runtime():
    code = (
        "import sys, radixlm\n"
        "heavy = [m for m in ('torch', 'radixlm.runtime', 'requests', 'numpy') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
