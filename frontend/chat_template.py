"""A chat template as the language sees it: the text around each role's message.

The frontend builds prompts itself (the native `/generate` API takes raw text), so a template is
a prefix and a suffix per role plus the stop strings that end an assistant turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class ChatTemplateStyle(Enum):
    PLAIN = "plain"
    # Llama-2: the first system message sits inside the first user turn's [INST] block.
    LLAMA2 = "llama2"


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    default_system_prompt: str | None
    role_prefix_and_suffix: dict[str, tuple[str, str]]
    stop_str: tuple[str, ...] = ()
    image_token: str = "<image>"
    style: ChatTemplateStyle = field(default=ChatTemplateStyle.PLAIN)

    def get_prefix_and_suffix(self, role: str, history: list[dict]) -> tuple[str, str]:
        """The text before and after a `role` message, given the messages already in the chat."""
        prefix, suffix = self.role_prefix_and_suffix.get(role, ("", ""))
        if self.style is ChatTemplateStyle.LLAMA2:
            if role == "system" and not history:
                user_prefix = self.role_prefix_and_suffix.get("user", ("", ""))[0]
                return user_prefix + prefix, suffix
            if role == "user" and len(history) == 1 and history[0]["content"] is not None:
                # The system message already opened this [INST] block.
                return "", suffix
        return prefix, suffix

    def get_prompt(self, messages: list[dict]) -> str:
        """Renders OpenAI-style messages (a None system content means the default prompt)."""
        prompt = ""
        for i, message in enumerate(messages):
            role, content = message["role"], message["content"]
            if role == "system" and content is None:
                content = self.default_system_prompt
                if content is None:
                    continue
            prefix, suffix = self.get_prefix_and_suffix(role, messages[:i])
            prompt += f"{prefix}{content}{suffix}"
        return prompt
