"""Chat ``messages`` -> one prompt string through the model's chat template.

Templates that know nothing of tools (SmolLM2's) still get them: the tool list and the call
format go into the system message, in Qwen2.5's words, so the model can answer with
``<tool_call>`` blocks that ``tools.parse_tool_calls`` understands.
"""

from __future__ import annotations

import json
from typing import Any

import jinja2

from radixlm.runtime.errors import InvalidRequestError
from radixlm.runtime.openai_api.tools import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from radixlm.runtime.tokenizer import Tokenizer

ROLES = ("system", "developer", "user", "assistant", "tool")

TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
)
TOOLS_POSTAMBLE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


def read_messages(messages: Any) -> list[dict[str, Any]]:
    """Validated messages with plain-string content (text parts joined)."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty list", "messages")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequestError(f"{where} must be an object", where)
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequestError(
                f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}", f"{where}.role"
            )
        tool_calls = message.get("tool_calls") if role == "assistant" else None
        if tool_calls is not None and not _valid_tool_calls(tool_calls):
            raise InvalidRequestError(
                f"{where}.tool_calls must be a list of function calls with name and arguments",
                f"{where}.tool_calls",
            )
        content = _content_text(message.get("content"), where, allow_none=bool(tool_calls))
        item: dict[str, Any] = {
            "role": "system" if role == "developer" else role,
            "content": content,
        }
        if tool_calls:
            item["tool_calls"] = tool_calls
        for key in ("name", "tool_call_id"):
            if isinstance(message.get(key), str):
                item[key] = message[key]
        out.append(item)
    return out


def _content_text(content: Any, where: str, allow_none: bool) -> str:
    if content is None and allow_none:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise InvalidRequestError(
                    f"{where}.content[{j}]: only text content parts are supported",
                    f"{where}.content[{j}]",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequestError(
                    f"{where}.content[{j}].text must be a string", f"{where}.content[{j}].text"
                )
            texts.append(text)
        return "".join(texts)
    raise InvalidRequestError(
        f"{where}.content must be a string or a list of text parts", f"{where}.content"
    )


def _valid_tool_calls(tool_calls: Any) -> bool:
    if not isinstance(tool_calls, list):
        return False
    for call in tool_calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return False
        if not isinstance(function.get("arguments", "{}"), (str, dict)):
            return False
    return True


def render_prompt(
    tokenizer: Tokenizer, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> str:
    template = tokenizer.chat_template
    if not template:
        raise InvalidRequestError(
            "this model has no chat template; use /v1/completions", "messages"
        )
    if tools and "tools" not in template:
        messages = _with_tool_instructions(messages, tools)
    if "tool_calls" not in template:
        messages = [_fold_tool_calls(m) for m in messages]
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tools=tools)
    except (jinja2.TemplateError, TypeError) as exc:
        raise InvalidRequestError(
            f"messages could not be rendered with the model's chat template: {exc}", "messages"
        ) from None


def _with_tool_instructions(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    listing = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    instructions = TOOLS_PREAMBLE + listing + TOOLS_POSTAMBLE
    if messages[0]["role"] == "system":
        first = {**messages[0], "content": messages[0]["content"] + "\n\n" + instructions}
        return [first, *messages[1:]]
    return [{"role": "system", "content": instructions}, *messages]


def _fold_tool_calls(message: dict[str, Any]) -> dict[str, Any]:
    """Earlier assistant calls, written the way the model is asked to write them."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    blocks = []
    for call in calls:
        function = call["function"]
        arguments = function.get("arguments", "{}")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                pass  # shown to the model as the string it was given
        body = json.dumps({"name": function["name"], "arguments": arguments}, ensure_ascii=False)
        blocks.append(f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}")
    content = "\n".join(filter(None, [message["content"], *blocks]))
    return {key: value for key, value in message.items() if key != "tool_calls"} | {
        "content": content
    }
