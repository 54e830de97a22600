"""Request bodies of the native `/generate` API, shaped exactly as SGLang's client sends them.

Every gen sends all 17 sampling keys (nulls and empty lists included); the four logprob keys go
at the top level and only when set; `dtype` becomes a client-side regex (plus stop strings for
numbers), so the server only ever sees `regex`.
"""

from __future__ import annotations

import dataclasses
import warnings

from radixlm.backend.base import Prompt
from radixlm.sampling import SamplingParams, stop_list

REGEX_INT = r"[-+]?[0-9]+[ \n]*"
REGEX_FLOAT = r"[-+]?[0-9]*\.?[0-9]+[ \n]*"
REGEX_BOOL = r"(True|False)"
REGEX_STR = r"\"[\w\d\s]*\""

# dtype -> (regex sent, stop strings appended). Numbers stop at the first space or newline.
DTYPE_RULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "int": (REGEX_INT, (" ", "\n")),
    "float": (REGEX_FLOAT, (" ", "\n")),
    "str": (REGEX_STR, ()),
    "bool": (REGEX_BOOL, ()),
}

_LOGPROB_KEYS = (
    "return_logprob",
    "logprob_start_len",
    "top_logprobs_num",
    "return_text_in_logprobs",
)


def apply_dtype(params: SamplingParams) -> SamplingParams:
    """Turns `dtype` into the regex and stops it stands for; dtype wins over a regex."""
    if params.dtype is None:
        return params
    regex, extra_stops = DTYPE_RULES[params.dtype]
    if params.regex is not None:
        warnings.warn(
            f"both dtype ({params.dtype}) and regex ({params.regex!r}) are set; using dtype",
            stacklevel=2,
        )
    stop = stop_list(params.stop) + list(extra_stops) if extra_stops else params.stop
    return dataclasses.replace(params, regex=regex, stop=stop)


def sampling_params_body(
    params: SamplingParams, skip_special_tokens: bool, spaces_between_special_tokens: bool
) -> dict:
    return {
        "skip_special_tokens": skip_special_tokens,
        "spaces_between_special_tokens": spaces_between_special_tokens,
        "max_new_tokens": params.max_new_tokens,
        "min_new_tokens": params.min_new_tokens,
        "n": params.n,
        "stop": _json_list(params.stop),
        "stop_token_ids": _json_list(params.stop_token_ids),
        "stop_regex": _json_list(params.stop_regex),
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "min_p": params.min_p,
        "frequency_penalty": params.frequency_penalty,
        "presence_penalty": params.presence_penalty,
        "ignore_eos": params.ignore_eos,
        "regex": params.regex,
        "json_schema": params.json_schema,
    }


def generate_body(
    prompt: Prompt,
    params: SamplingParams,
    *,
    stream: bool,
    skip_special_tokens: bool = True,
    spaces_between_special_tokens: bool = True,
) -> dict:
    params = apply_dtype(params)
    body: dict = {
        "text": prompt.text,
        "sampling_params": sampling_params_body(
            params, skip_special_tokens, spaces_between_special_tokens
        ),
    }
    for key in _LOGPROB_KEYS:
        value = getattr(params, key)
        if value is not None:
            body[key] = value
    if stream:
        body["stream"] = True
    return with_images(body, prompt)


def prefill_body(prompt: Prompt) -> dict:
    """Computes (and so caches) the prompt without generating; answers its token count."""
    return with_images({"text": prompt.text, "sampling_params": {"max_new_tokens": 0}}, prompt)


def choice_scoring_body(prompt: Prompt, choices: list[str], prompt_tokens: int) -> dict:
    """Scores every `prompt + choice` at once.

    Logprobs start two tokens before the choice: the prompt's last token may merge with the
    choice's first characters when the two are tokenized together ("token healing").
    """
    return with_images(
        {
            "text": [prompt.text + choice for choice in choices],
            "sampling_params": {"max_new_tokens": 0, "temperature": 0},
            "return_logprob": True,
            "return_text_in_logprobs": True,
            "logprob_start_len": max(prompt_tokens - 2, 0),
        },
        prompt,
    )


def unconditional_body(input_ids: list[list[int]]) -> dict:
    """Scores each choice's tokens with no prompt before them.

    SGLang's client leaves out `logprob_start_len` here, which an SGLang 0.5 server reads as -1
    (no input logprobs); sending 0 asks for them explicitly and means the same to any server.
    """
    return {
        "input_ids": input_ids,
        "sampling_params": {"max_new_tokens": 0},
        "return_logprob": True,
        "logprob_start_len": 0,
    }


def with_images(body: dict, prompt: Prompt) -> dict:
    if prompt.images:
        if len(prompt.images) > 1:
            raise ValueError(
                f"the native API takes one image per request; this prompt has {len(prompt.images)}"
            )
        body["image_data"] = prompt.images[0].base64
    return body


def _json_list(value: str | list | tuple) -> str | list:
    # A lone stop string stays a string, as SGLang sends it; sequences go out as lists.
    return value if isinstance(value, str) else list(value)
