"""The built-in chat templates and the model-path rules that pick one (same names as SGLang's)."""

from __future__ import annotations

import re

from radixlm.chat_template import ChatTemplate, ChatTemplateStyle

_IM = {r: (f"<|im_start|>{r}\n", "<|im_end|>\n") for r in ("system", "user", "assistant")}
_LLAMA3 = {
    r: (f"<|start_header_id|>{r}<|end_header_id|>\n\n", "<|eot_id|>")
    for r in ("system", "user", "assistant")
}

BUILTIN_TEMPLATES: tuple[ChatTemplate, ...] = (
    ChatTemplate(
        name="default",
        default_system_prompt=None,
        role_prefix_and_suffix={
            "system": ("SYSTEM:", "\n"),
            "user": ("USER:", "\n"),
            "assistant": ("ASSISTANT:", "\n"),
        },
    ),
    # OpenAI chat models: the API carries roles itself, the text holds only contents.
    ChatTemplate(
        name="chatgpt",
        default_system_prompt=None,
        role_prefix_and_suffix={"system": ("", ""), "user": ("", ""), "assistant": ("", "")},
    ),
    ChatTemplate(
        name="claude",
        default_system_prompt=None,
        role_prefix_and_suffix={
            "system": ("", ""),
            "user": ("\n\nHuman: ", ""),
            "assistant": ("\n\nAssistant:", ""),
        },
    ),
    ChatTemplate("chatml", None, _IM, stop_str=("<|im_end|>",)),
    ChatTemplate("qwen", "You are a helpful assistant.", _IM, stop_str=("<|im_end|>",)),
    ChatTemplate(
        name="vicuna_v1.1",
        default_system_prompt=(
            "A chat between a curious user and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the user's questions."
        ),
        role_prefix_and_suffix={
            "system": ("", " "),
            "user": ("USER:", " "),
            "assistant": ("ASSISTANT:", "</s>"),
        },
        image_token=" <image>\n",
    ),
    ChatTemplate(
        name="llama-2-chat",
        default_system_prompt=None,
        role_prefix_and_suffix={
            "system": ("<<SYS>>\n", "\n<</SYS>>\n\n"),
            "user": ("[INST] ", " [/INST]"),
            "assistant": ("", " </s><s>"),
        },
        style=ChatTemplateStyle.LLAMA2,
    ),
    ChatTemplate(
        name="mistral",
        default_system_prompt=None,
        role_prefix_and_suffix={
            "system": ("[SYSTEM_PROMPT] ", " [/SYSTEM_PROMPT]"),
            "user": ("[INST] ", " [/INST]"),
            "assistant": ("", " </s><s>"),
        },
        stop_str=("</s>",),
        image_token="[IMG]",
    ),
    ChatTemplate(
        "llama-3-instruct", None, _LLAMA3, stop_str=("<|eot_id|>",), image_token="<|image|>"
    ),
    ChatTemplate(
        name="gemma-it",
        default_system_prompt=None,
        role_prefix_and_suffix={
            "system": ("", ""),
            "user": ("<start_of_turn>user\n", "<end_of_turn>\n"),
            "assistant": ("<start_of_turn>model\n", "<end_of_turn>\n"),
        },
        image_token="<start_of_image>",
    ),
    ChatTemplate(
        name="yi-1.5",
        default_system_prompt=None,
        role_prefix_and_suffix={
            "system": ("", ""),
            "user": ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"),
            "assistant": ("", "<|im_end|>\n"),
        },
        stop_str=("<|im_end|>",),
    ),
    ChatTemplate(
        name="deepseek-v3",
        default_system_prompt=None,
        role_prefix_and_suffix={
            "system": ("", ""),
            "user": ("<｜User｜>", ""),
            "assistant": ("<｜Assistant｜>", "<｜end▁of▁sentence｜>"),
        },
        stop_str=("<｜end▁of▁sentence｜>",),
    ),
)

# (pattern that must match the model path, pattern that must not match, template); first wins.
# SGLang's rules, plus SmolLM (its instruct models use ChatML).
MODEL_PATH_RULES: tuple[tuple[re.Pattern[str], re.Pattern[str] | None, str], ...] = tuple(
    (re.compile(p, re.IGNORECASE), re.compile(x, re.IGNORECASE) if x else None, name)
    for p, x, name in (
        (r"deepseek-(v3|r1)", r"base", "deepseek-v3"),
        (r"orion", None, "claude"),
        (r"vicuna|llava-v1\.5|llava-next-video-7b", None, "vicuna_v1.1"),
        (r"llama-2.*chat|codellama.*instruct", None, "llama-2-chat"),
        (r"pixtral|(mistral|mixtral).*instruct", None, "mistral"),
        (r"llama-3.*instruct", None, "llama-3-instruct"),
        (r"tinyllama", None, "chatml"),
        (r"smollm.*instruct", None, "chatml"),
        (r"qwen.*(chat|instruct)", r"llava", "qwen"),
        (r"yi-1\.5.*chat", None, "yi-1.5"),
        (r"gemma.*it|gemma-3", None, "gemma-it"),
    )
)

# Markers in a model's own Jinja chat template -> the built-in template that renders like it.
JINJA_MARKERS: tuple[tuple[str, str], ...] = (
    ("<|im_start|>", "chatml"),
    ("<|start_header_id|>", "llama-3-instruct"),
    ("<start_of_turn>", "gemma-it"),
    ("<<SYS>>", "llama-2-chat"),
    ("[INST]", "mistral"),
)
