"""Structured extraction: a whole JSON object by schema, and field by field with regexes.

python examples/json_extraction.py [--url URL]
"""

from __future__ import annotations

import json
from typing import Any

from example_backend import run_example

import radixlm as rl

TEXT = "Marie Curie was born in Warsaw in 1867 and won two Nobel Prizes."

PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 32},
        "birth_year": {"type": "integer"},
        "city": {"type": "string", "maxLength": 32},
    },
    "required": ["name", "birth_year", "city"],
    # Without this the schema allows extra keys, and a small model keeps inventing them.
    "additionalProperties": False,
}


@rl.function
def extract_by_schema(s, text):
    s += rl.user("Extract the person from this text as JSON.\nText: " + text)
    s += rl.assistant(rl.gen("person", max_tokens=64, json_schema=PERSON_SCHEMA))


@rl.function
def extract_by_regex(s, text):
    s += "Text: " + text + "\nThe same facts as JSON:\n"
    # The program writes the JSON skeleton; only the values are generated, each constrained.
    with s.var_scope("person"):
        s += '{"name": ' + rl.gen("name", max_tokens=16, regex=r'"[A-Za-z ]{1,30}"')
        s += ', "birth_year": ' + rl.gen("birth_year", max_tokens=6, regex=r"[0-9]{4}")
        s += ', "city": ' + rl.gen("city", max_tokens=16, regex=r'"[A-Za-z ]{1,30}"') + "}"


def main(backend: Any) -> dict[str, Any]:
    by_schema = json.loads(extract_by_schema.run(TEXT, temperature=0, backend=backend)["person"])
    print("by schema:", by_schema)
    by_regex = json.loads(extract_by_regex.run(TEXT, temperature=0, backend=backend)["person"])
    print("by regex: ", by_regex)
    return {"by_schema": by_schema, "by_regex": by_regex}


if __name__ == "__main__":
    run_example(main, __doc__)
