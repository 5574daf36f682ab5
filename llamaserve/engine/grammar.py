"""Grammars that constrain output: JSON, a JSON schema, a forced tool call.

The schema → GBNF conversion is llama-cpp-python's (json_schema_to_gbnf); this module only
chooses the schema and turns conversion failures into client errors.
"""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from .types import EngineError

JSON_OBJECT_GRAMMAR = JSON_GBNF
MAX_SCHEMA_CHARS = 64 * 1024  # a schema (or a tool's parameters) as JSON text


def json_schema_grammar(schema: dict[str, Any], param: str) -> str:
    """GBNF for output that validates against `schema`; a 400 naming `param` for schema
    constructs llama.cpp's converter does not support (never a silent fallback to any JSON)."""
    text = json.dumps(schema)
    if len(text) > MAX_SCHEMA_CHARS:
        raise EngineError(f"the JSON schema is {len(text)} characters; at most "
                          f"{MAX_SCHEMA_CHARS} are accepted", param=param)
    try:
        return json_schema_to_gbnf(text)
    except (AssertionError, ValueError, KeyError, TypeError, IndexError, RecursionError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineError(f"unsupported JSON schema: {detail}", param=param) from exc


def tool_call_schema(functions: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON a forced tool call must be: {"name": one of the functions, "arguments": its
    parameters}. `functions` are OpenAI function definitions (name, parameters)."""
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": function["name"]},
                "arguments": function.get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
        for function in functions
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}
