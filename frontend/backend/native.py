"""What a backend speaking the native `/generate` protocol does, whatever carries the bodies.

`RuntimeEndpoint` carries them over HTTP; `Engine` hands them to an in-process engine. Both send
the same bodies and read the same responses.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from typing import Any

from radixlm.backend.base import BaseBackend, Prompt
from radixlm.backend.native_body import (
    choice_scoring_body,
    generate_body,
    prefill_body,
    unconditional_body,
)
from radixlm.backend.token_usage import TokenUsage
from radixlm.chat_templates import chat_template_for_model
from radixlm.choices import ChoicesDecision, ChoicesSamplingMethod, mean_logprob
from radixlm.global_config import global_config
from radixlm.sampling import SamplingParams

# Above this temperature a "select" would have to sample; scoring choices only supports argmax.
MAX_SELECT_TEMPERATURE = 1e-5


class NativeBackend(BaseBackend):
    def __init__(self, model_info: dict, chat_template_name: str | None = None) -> None:
        self.model_info = model_info
        self.chat_template = chat_template_for_model(model_info, chat_template_name)
        self.token_usage = TokenUsage()

    def get_model_name(self) -> str:
        return str(self.model_info.get("model_path"))

    # ---- transport, provided by subclasses ----

    @abstractmethod
    def _generate(self, body: dict) -> Any:
        """Runs one non-streaming `/generate` body; returns its JSON (a dict, or a list)."""

    @abstractmethod
    def _generate_events(self, body: dict) -> Iterator[dict]:
        """Runs a streaming body; yields each event (cumulative `text`, latest `meta_info`)."""

    # ---- BaseBackend ----

    def generate(self, prompt: Prompt, params: SamplingParams) -> tuple[str, dict]:
        out = self._call(generate_body(prompt, params, stream=False, **_detokenize_flags()))
        return out["text"], out["meta_info"]

    def generate_stream(self, prompt: Prompt, params: SamplingParams) -> Iterator[tuple[str, dict]]:
        body = generate_body(prompt, params, stream=True, **_detokenize_flags())
        num_chars = 0
        meta_info: dict | None = None
        for event in self._generate_events(body):
            # Events carry the whole completion so far; hand out only what is new.
            delta = event["text"][num_chars:]
            num_chars += len(delta)
            meta_info = event["meta_info"]
            yield delta, meta_info
        if meta_info is not None:
            self.token_usage.record(meta_info)

    def select(
        self,
        prompt: Prompt,
        choices: list[str],
        temperature: float,
        choices_method: ChoicesSamplingMethod,
    ) -> ChoicesDecision:
        if temperature > MAX_SELECT_TEMPERATURE:
            raise ValueError(
                f"select scores every choice and takes the best, so it needs temperature 0; "
                f"got {temperature}"
            )
        # Computing the prompt alone caches it for the batch below and gives its token count.
        prompt_tokens = self._call(prefill_body(prompt))["meta_info"]["prompt_tokens"]
        scored = self._call(choice_scoring_body(prompt, choices, prompt_tokens))
        input_token_logprobs = [r["meta_info"]["input_token_logprobs"] for r in scored]
        output_token_logprobs = [r["meta_info"].get("output_token_logprobs", []) for r in scored]
        for i, entries in enumerate(input_token_logprobs):
            # Without token healing the first scored token belongs to the prompt; drop it.
            first_text = entries[0][2] if entries else None
            if first_text is not None and prompt.text.endswith(first_text):
                input_token_logprobs[i] = entries[1:]
        unconditional = None
        if choices_method.requires_unconditional_logprobs:
            input_ids = [[e[1] for e in entries] for entries in input_token_logprobs]
            results = self._call(unconditional_body(input_ids))
            unconditional = [r["meta_info"]["input_token_logprobs"] for r in results]
        return choices_method(
            choices=choices,
            normalized_prompt_logprobs=[mean_logprob(e) for e in input_token_logprobs],
            input_token_logprobs=input_token_logprobs,
            output_token_logprobs=output_token_logprobs,
            unconditional_token_logprobs=unconditional,
        )

    def cache_prefix(self, prefix: str) -> None:
        self._call({"text": prefix, "sampling_params": {"max_new_tokens": 0}})

    def commit_lazy_operations(self, prompt: Prompt) -> None:
        self._call(prefill_body(prompt))

    def _call(self, body: dict) -> Any:
        out = self._generate(body)
        for item in out if isinstance(out, list) else [out]:
            self.token_usage.record(item["meta_info"])
        return out


def _detokenize_flags() -> dict[str, bool]:
    return {
        "skip_special_tokens": global_config.skip_special_tokens_in_output,
        "spaces_between_special_tokens": global_config.spaces_between_special_tokens_in_out,
    }
