"""A backend for any OpenAI-compatible endpoint (OpenAI itself, radixlm's /v1, vLLM, ...).

The OpenAI API cannot do everything the native API can: there is no regex constraint, chat
models continue whole assistant turns only, and scoring given continuations needs the
completions API's `echo` + `logprobs`. What it cannot do raises `NotImplementedError` (or
`ValueError` for a program shape it cannot express) with the reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from radixlm.backend.base import BaseBackend, Prompt
from radixlm.backend.http_client import HttpClient
from radixlm.backend.token_usage import TokenUsage
from radixlm.chat_template import ChatTemplate
from radixlm.chat_templates import get_chat_template
from radixlm.choices import ChoicesDecision, ChoicesSamplingMethod, mean_logprob
from radixlm.sampling import SamplingParams, stop_list

_USE_NATIVE = "use RuntimeEndpoint or Engine (the native API) for this"


def guess_is_chat_model(model: str) -> bool:
    # OpenAI's completion-only models are the "-instruct" and base (davinci/babbage) ones.
    return not ("instruct" in model or model.startswith(("davinci", "babbage")))


class OpenAI(BaseBackend):
    def __init__(
        self,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        is_chat_model: bool | None = None,
        chat_template: ChatTemplate | None = None,
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.client = HttpClient(self.base_url, api_key or os.environ.get("OPENAI_API_KEY"))
        self.is_chat_model = guess_is_chat_model(model) if is_chat_model is None else is_chat_model
        # A chat model gets the roles from the API, so its text carries no role markers.
        self.chat_template = chat_template or get_chat_template(
            "chatgpt" if self.is_chat_model else "default"
        )
        self.token_usage = TokenUsage()

    # ---- generation ----

    def generate(self, prompt: Prompt, params: SamplingParams) -> tuple[str, dict]:
        path, body = self._request(prompt, params)
        out = self.client.post(path, body)
        choice = out["choices"][0]
        text = choice["message"]["content"] if self.is_chat_model else choice["text"]
        return text or "", self._meta_info(out, choice)

    def generate_stream(self, prompt: Prompt, params: SamplingParams) -> Iterator[tuple[str, dict]]:
        path, body = self._request(prompt, params)
        body["stream"] = True
        for event in self.client.post_events(path, body):
            if not event.get("choices"):
                continue
            choice = event["choices"][0]
            if self.is_chat_model:
                delta = (choice.get("delta") or {}).get("content")
            else:
                delta = choice.get("text")
            yield delta or "", self._meta_info(event, choice)

    def _request(self, prompt: Prompt, params: SamplingParams) -> tuple[str, dict]:
        if params.regex is not None or params.dtype is not None:
            raise NotImplementedError(
                f"the OpenAI API has no regex constraint (dtype and regex need one); {_USE_NATIVE}"
            )
        if params.return_logprob:
            raise NotImplementedError(f"gen logprobs are not supported here; {_USE_NATIVE}")
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_new_tokens,
            "n": params.n,
            "stop": stop_list(params.stop) or None,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "frequency_penalty": params.frequency_penalty,
            "presence_penalty": params.presence_penalty,
        }
        if not self.is_chat_model:
            if params.json_schema is not None:
                raise NotImplementedError(f"completions take no JSON schema; {_USE_NATIVE}")
            return "/completions", body | {"prompt": prompt.text}
        if prompt.cur_role != "assistant" or prompt.role_text.strip():
            raise ValueError(
                "with a chat model, gen must start an assistant turn: "
                "s += assistant(gen('answer')) (the API continues whole turns, not text)"
            )
        body["messages"] = list(prompt.messages)
        if params.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": json.loads(params.json_schema)},
            }
        return "/chat/completions", body

    def _meta_info(self, out: dict, choice: dict) -> dict:
        usage = out.get("usage") or {}
        meta = {
            "id": out.get("id"),
            "finish_reason": choice.get("finish_reason"),
            "prompt_tokens": usage.get("prompt_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0),
            "cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0),
        }
        if usage:
            self.token_usage.record(meta)
        return meta

    # ---- select ----

    def select(
        self,
        prompt: Prompt,
        choices: list[str],
        temperature: float,
        choices_method: ChoicesSamplingMethod,
    ) -> ChoicesDecision:
        if self.is_chat_model:
            raise NotImplementedError(
                f"select scores given continuations, which a chat model cannot do; "
                f"use a completion model or {_USE_NATIVE}"
            )
        if choices_method.requires_unconditional_logprobs:
            raise NotImplementedError(f"unconditional scoring needs token ids; {_USE_NATIVE}")
        # Score each prompt + choice by echoing it back with logprobs and generating nothing.
        out = self.client.post(
            "/completions",
            {
                "model": self.model,
                "prompt": [prompt.text + choice for choice in choices],
                "max_tokens": 0,
                "echo": True,
                "logprobs": 1,
                "temperature": 0,
            },
        )
        rows = sorted(out["choices"], key=lambda c: c["index"])
        input_token_logprobs = [
            self._choice_entries(row["logprobs"], len(prompt.text)) for row in rows
        ]
        return choices_method(
            choices=choices,
            normalized_prompt_logprobs=[mean_logprob(e) for e in input_token_logprobs],
            input_token_logprobs=input_token_logprobs,
            output_token_logprobs=[[] for _ in choices],
        )

    @staticmethod
    def _choice_entries(logprobs: dict, prompt_len: int) -> list[list[Any]]:
        """Entries of the tokens that reach past the prompt (they hold the choice's text)."""
        return [
            [logprob, None, token]
            for token, logprob, offset in zip(
                logprobs["tokens"], logprobs["token_logprobs"], logprobs["text_offset"], strict=True
            )
            if offset + len(token) > prompt_len
        ]

    # ---- no server-side prefix cache to manage ----

    def cache_prefix(self, prefix: str) -> None:
        """The OpenAI API has no explicit prefix cache; nothing to send."""

    def commit_lazy_operations(self, prompt: Prompt) -> None:
        """The OpenAI API has no explicit prefix cache; nothing to send."""

    def flush_cache(self) -> None:
        """The OpenAI API has no cache to flush."""

    def get_server_info(self) -> dict:
        return {"base_url": self.base_url, "model": self.model, "is_chat_model": self.is_chat_model}
