"""OpenAI ``tools`` / ``tool_choice``: validation, the constraint that enforces a call, and the
tool-call parser for model output (Qwen/Hermes-style ``<tool_call>{...}</tool_call>`` blocks and
plain JSON ``{"name": ..., "arguments": ...}``), whole or streamed."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from radixlm.runtime.errors import InvalidRequestError
from radixlm.runtime.openai_api.strict_schema import strict_schema

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ANY_OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # a JSON object as text, as OpenAI sends it
    id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class ToolSpec:
    """The request's tools and how they may be used. ``forced`` is None, "required" or a name."""

    tools: list[dict[str, Any]]  # validated OpenAI tool objects, passed to the chat template
    parameters: dict[str, dict[str, Any]]  # function name -> its JSON schema
    choice: str  # "auto" | "none" | "required" | "named"
    forced_name: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.tools) and self.choice != "none"

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.parameters)

    def constraint_schema(self) -> str | None:
        """JSON schema the output must follow when a call is required (or named), else None."""
        if self.choice == "named":
            return json.dumps(_call_schema(self.forced_name, self.parameters[self.forced_name]))
        if self.choice == "required":
            calls = [_call_schema(name, params) for name, params in self.parameters.items()]
            return json.dumps(calls[0] if len(calls) == 1 else {"anyOf": calls})
        return None


def _call_schema(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return strict_schema(
        {
            "type": "object",
            "properties": {"name": {"const": name}, "arguments": parameters},
            "required": ["name", "arguments"],
        }
    )


def read_tools(tools: Any, tool_choice: Any) -> ToolSpec:
    """Validates ``tools`` and ``tool_choice`` (errors name the field)."""
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise InvalidRequestError("tools must be a list of function tools", "tools")
    parameters: dict[str, dict[str, Any]] = {}
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise InvalidRequestError(f"{where} must be a tool of type function", where)
        function = tool.get("function")
        if not isinstance(function, dict):
            raise InvalidRequestError(f"{where}.function must be an object", f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidRequestError(
                f"{where}.function.name must be 1-64 letters, digits, _ . or -",
                f"{where}.function.name",
            )
        params = function.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise InvalidRequestError(
                f"{where}.function.parameters must be a JSON schema object",
                f"{where}.function.parameters",
            )
        if name in parameters:
            raise InvalidRequestError(f"duplicate tool name {name!r}", f"{where}.function.name")
        parameters[name] = params or _ANY_OBJECT
    choice, forced = _read_choice(tool_choice, parameters, bool(tools))
    return ToolSpec(tools=tools, parameters=parameters, choice=choice, forced_name=forced)


def _read_choice(
    tool_choice: Any, parameters: dict[str, Any], has_tools: bool
) -> tuple[str, str | None]:
    if tool_choice is None:
        return ("auto" if has_tools else "none"), None
    if tool_choice == "none":
        return "none", None
    if not has_tools:
        raise InvalidRequestError("tool_choice is only allowed when tools are given", "tool_choice")
    if tool_choice in ("auto", "required"):
        return tool_choice, None
    if isinstance(tool_choice, dict) and tool_choice.get("type", "function") == "function":
        function = tool_choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if name not in parameters:
            raise InvalidRequestError(
                f"tool_choice names the function {name!r}, which is not among the tools",
                "tool_choice",
            )
        return "named", name
    raise InvalidRequestError(
        'tool_choice must be "none", "auto", "required" or {"type": "function", '
        '"function": {"name": ...}}',
        "tool_choice",
    )


# ---- parsing model output ---------------------------------------------------------------------


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def parse_tool_calls(text: str, names: frozenset[str]) -> tuple[str | None, list[ToolCall]]:
    """(content, calls). Text that is not a well-formed call of a known tool stays content."""
    start = text.find(TOOL_CALL_OPEN)
    if start >= 0:
        calls = _tagged_calls(text[start:], names)
        if calls:
            before = text[:start]
            return (before if before.strip() else None), calls
        return text, []
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        calls = _json_calls(stripped, names)
        if calls:
            return None, calls
    return text, []


def _tagged_calls(text: str, names: frozenset[str]) -> list[ToolCall]:
    calls = []
    for block in text.split(TOOL_CALL_OPEN)[1:]:
        # The closing tag may be missing when generation stopped right after the JSON.
        body = block.split(TOOL_CALL_CLOSE, 1)[0].strip()
        parsed = _json_calls(body, names)
        if len(parsed) != 1:
            return []
        calls.extend(parsed)
    return calls


def _json_calls(text: str, names: frozenset[str]) -> list[ToolCall]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return []
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        call = _one_call(item, names)
        if call is None:
            return []
        calls.append(call)
    return calls


def _one_call(item: Any, names: frozenset[str]) -> ToolCall | None:
    if not isinstance(item, dict) or item.get("name") not in names:
        return None
    # Llama-3 style models say "parameters" where OpenAI says "arguments".
    arguments = item.get("arguments", item.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(
        name=item["name"], arguments=json.dumps(arguments, ensure_ascii=False), id=new_call_id()
    )


class ToolCallStream:
    """Splits a growing completion into streamable content and, at the end, tool calls.

    Text that could still turn into a call (an opening tag, a partial tag at the end, or output
    that starts like JSON) is held back; everything before it streams as content at once.
    """

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names
        self.sent = 0  # characters of content already streamed

    def feed(self, text: str, final: bool) -> tuple[str, list[ToolCall]]:
        """(content delta, tool calls); calls are only ever returned with ``final``."""
        start = text.find(TOOL_CALL_OPEN)
        if final:
            _, calls = parse_tool_calls(text, self.names)
            if not calls:
                return self._advance(text, len(text)), []
            return self._content_before_calls(text, start), calls
        if start >= 0:
            return self._content_before_calls(text, start), []
        if text.lstrip()[:1] in ("", "{", "["):
            return "", []
        end = len(text) - _partial_tag_len(text)
        if self.sent == 0 and not text[:end].strip():
            return "", []  # leading whitespace waits: a call may follow it
        return self._advance(text, end), []

    def _content_before_calls(self, text: str, start: int) -> str:
        """Content up to the first call; whitespace alone before it is no content (as whole)."""
        if start < 0 or (self.sent == 0 and not text[:start].strip()):
            self.sent = max(start, self.sent)
            return ""
        return self._advance(text, start)

    def _advance(self, text: str, end: int) -> str:
        end = max(end, self.sent)
        delta = text[self.sent : end]
        self.sent = end
        return delta


def _partial_tag_len(text: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of the opening tag."""
    for size in range(min(len(TOOL_CALL_OPEN) - 1, len(text)), 0, -1):
        if TOOL_CALL_OPEN.startswith(text[-size:]):
            return size
    return 0
