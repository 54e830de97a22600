"""The interface every backend implements, and what the interpreter hands to it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from radixlm.chat_template import ChatTemplate
from radixlm.choices import ChoicesDecision, ChoicesSamplingMethod
from radixlm.sampling import SamplingParams


@dataclass(frozen=True)
class ImageData:
    label: str  # the file path, or "<bytes>"
    base64: str


@dataclass(frozen=True)
class Prompt:
    """A snapshot of one program stream at the point of a backend call."""

    text: str
    images: tuple[ImageData, ...] = ()
    # Completed chat messages (OpenAI format) and the open role, for chat-API backends.
    messages: tuple[dict, ...] = ()
    cur_role: str | None = None
    # Text appended since the open role began (what its message would contain so far).
    role_text: str = ""


class BaseBackend(ABC):
    # True when the backend can splice forks' KV caches together (join "concate_and_append").
    support_concate_and_append: bool = False
    chat_template: ChatTemplate

    def get_chat_template(self) -> ChatTemplate:
        return self.chat_template

    @abstractmethod
    def generate(self, prompt: Prompt, params: SamplingParams) -> tuple[str, dict]:
        """Returns the completion (new text only) and the backend's meta info for it."""

    @abstractmethod
    def generate_stream(self, prompt: Prompt, params: SamplingParams) -> Iterator[tuple[str, dict]]:
        """Yields (new text delta, latest meta info) until the completion ends."""

    @abstractmethod
    def select(
        self,
        prompt: Prompt,
        choices: list[str],
        temperature: float,
        choices_method: ChoicesSamplingMethod,
    ) -> ChoicesDecision: ...

    @abstractmethod
    def cache_prefix(self, prefix: str) -> None:
        """Asks the backend to keep `prefix` cached (a no-op where there is no cache)."""

    @abstractmethod
    def commit_lazy_operations(self, prompt: Prompt) -> None:
        """Makes the backend hold the prompt's state now, before forks reuse it."""

    def concatenate_and_append(self, src_sids: list[str], dst_sid: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot concatenate KV caches")

    @abstractmethod
    def flush_cache(self) -> None: ...

    @abstractmethod
    def get_server_info(self) -> dict: ...
