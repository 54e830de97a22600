"""The chat-template registry: look a template up by name, by model path, or by Jinja source."""

from __future__ import annotations

from radixlm.chat_template import ChatTemplate
from radixlm.chat_template_library import BUILTIN_TEMPLATES, JINJA_MARKERS, MODEL_PATH_RULES

_registry: dict[str, ChatTemplate] = {t.name: t for t in BUILTIN_TEMPLATES}


def register_chat_template(template: ChatTemplate) -> None:
    _registry[template.name] = template


def chat_template_names() -> list[str]:
    return sorted(_registry)


def get_chat_template(name: str) -> ChatTemplate:
    try:
        return _registry[name]
    except KeyError:
        raise ValueError(
            f"unknown chat template {name!r}; known: {', '.join(chat_template_names())}"
        ) from None


def match_model_path(model_path: str) -> str | None:
    for pattern, exclude, name in MODEL_PATH_RULES:
        if pattern.search(model_path) and not (exclude and exclude.search(model_path)):
            return name
    return None


def match_jinja_template(source: str) -> str | None:
    for marker, name in JINJA_MARKERS:
        if marker in source:
            return name
    return None


def get_chat_template_by_model_path(model_path: str) -> ChatTemplate:
    return get_chat_template(match_model_path(model_path) or "default")


def chat_template_for_model(model_info: dict, name: str | None = None) -> ChatTemplate:
    """Picks the template for a served model.

    An explicit `name` wins; then the model path (`model_path` from /get_model_info) by the same
    rules as SGLang's client; then the model's own Jinja template when the server reports one
    under `chat_template`; else "default".
    """
    if name is not None:
        return get_chat_template(name)
    by_path = match_model_path(str(model_info.get("model_path") or ""))
    if by_path is not None:
        return get_chat_template(by_path)
    jinja = model_info.get("chat_template")
    by_jinja = match_jinja_template(jinja) if isinstance(jinja, str) else None
    return get_chat_template(by_jinja or "default")
