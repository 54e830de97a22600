"""OpenAI ``response_format`` -> the ``json_schema`` constraint string (SGLang's mapping, with
listed objects closed as OpenAI's structured outputs close them)."""

from __future__ import annotations

import json
from typing import Any

from radixlm.runtime.errors import InvalidRequestError
from radixlm.runtime.openai_api.strict_schema import strict_schema

# What SGLang sends for json_object: any JSON object.
JSON_OBJECT_SCHEMA = json.dumps({"type": "object"})


def json_schema_of(response_format: Any) -> str | None:
    """The schema to constrain the output to, or None for free text."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise InvalidRequestError("response_format must be an object", "response_format")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return JSON_OBJECT_SCHEMA
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise InvalidRequestError(
                "response_format.json_schema must be an object with a schema",
                "response_format.json_schema",
            )
        schema = spec.get("schema")
        if not isinstance(schema, dict):
            raise InvalidRequestError(
                "response_format.json_schema.schema must be a JSON schema object",
                "response_format.json_schema.schema",
            )
        return json.dumps(strict_schema(schema))
    raise InvalidRequestError(
        f"response_format.type must be text, json_object or json_schema, got {kind!r}",
        "response_format.type",
    )


def add_json_schema(sampling: dict[str, Any], schema: str | None, field: str) -> None:
    """Puts a route's JSON-schema constraint (from ``field``) into the sampling values; the
    ``regex`` / ``ebnf`` extra fields cannot be combined with it."""
    if schema is None:
        return
    for extra in ("regex", "ebnf"):
        if extra in sampling:
            raise InvalidRequestError(f"{field} cannot be combined with {extra}", field)
    sampling["json_schema"] = schema
