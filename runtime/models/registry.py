"""HF ``architectures[0]`` -> our model class."""

from __future__ import annotations

from torch import nn

from radixlm.runtime.models.llama import LlamaForCausalLM

MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": LlamaForCausalLM,
    "Qwen3ForCausalLM": LlamaForCausalLM,
}


def get_model_class(architecture: str) -> type[nn.Module]:
    if architecture not in MODEL_CLASSES:
        raise ValueError(
            f"unsupported architecture {architecture!r}; supported: {sorted(MODEL_CLASSES)}"
        )
    return MODEL_CLASSES[architecture]
