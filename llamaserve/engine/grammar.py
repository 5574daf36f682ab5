"""What constrained output must be: JSON schemas for response formats and forced tool calls.

The schemas are compiled by llguidance (engine/constraint.py runs them token by token). This
module holds what needs no model: the schema a forced tool call must match, the size limit,
and turning llguidance's compile errors into messages that name the offending keyword, where
it is, and the request field it came from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from .types import EngineError, JsonSchema

MAX_SCHEMA_CHARS = 64 * 1024  # a schema (or a tool's parameters) as JSON text
JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}  # response_format json_object
SUPPORTED_FORMATS = ("date-time", "time", "date", "duration", "email", "hostname", "ipv4",
                     "ipv6", "uuid", "uri")  # llguidance 1.9's
SUPPORTED_KEYWORDS = ("type, properties, required, additionalProperties, patternProperties, "
                      "minProperties, maxProperties, items, prefixItems, "
                      "minItems, maxItems, enum, const, anyOf, oneOf, allOf, $ref/$defs, "
                      "minimum, maximum, exclusiveMinimum, exclusiveMaximum, multipleOf, "
                      "minLength, maxLength, pattern, format")
MAX_ERROR_CHARS = 500

# Keywords whose value maps names (not keywords) to subschemas.
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
# Keywords whose value is a subschema or a list of subschemas.
_SUBSCHEMAS = ("items", "additionalItems", "additionalProperties", "unevaluatedItems",
               "unevaluatedProperties", "contains", "propertyNames", "not", "if", "then",
               "else", "anyOf", "oneOf", "allOf", "prefixItems")


# Stricter forms of llguidance's "date", "time" and "date-time" (which take February 29 of any
# year and a second 60 at any minute, both rejected by validators such as Python's
# jsonschema): years 0001-9999 with real leap years, no leap seconds, at most nanoseconds.
_YEAR = r"(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = (rf"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-"
         rf"(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))|{_LEAP_YEAR}-02-29)")
_TIME = (r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?"
         r"(?:[zZ]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])")
STRICT_FORMATS = {"date": f"^{_DATE}$", "time": f"^{_TIME}$",
                  "date-time": f"^{_DATE}[tT]{_TIME}$"}


def check_schema_size(spec: JsonSchema) -> None:
    text = json.dumps(spec.schema)
    if len(text) > MAX_SCHEMA_CHARS:
        raise EngineError(f"the JSON schema is {len(text)} characters; at most "
                          f"{MAX_SCHEMA_CHARS} are accepted", param=spec.param)


def tool_call_schema(functions: list[tuple[str, dict[str, Any]]], param: str) -> JsonSchema:
    """The JSON a forced tool call must be: {"name": one of the functions, "arguments": its
    parameters}. `functions` are OpenAI function definitions (name, parameters), each with the
    request field of its parameters (e.g. "tools[1].function.parameters").

    A function's parameters become a subschema here, so their local references ("#/$defs/X",
    "#") are rebased onto where the parameters now sit; pydantic and zod emit such references
    for nested and recursive models.
    """
    options, parts = [], []
    for i, (where, function) in enumerate(functions):
        base = "" if len(functions) == 1 else f"/anyOf/{i}"
        parameters = function.get("parameters") or {"type": "object"}
        options.append({
            "type": "object",
            "properties": {
                "name": {"const": function["name"]},
                "arguments": _rebase_refs(parameters, f"#{base}/properties/arguments"),
            },
            "required": ["name", "arguments"],
            # nothing else: the reply ends when the call does (JSON Schema would allow more
            # keys, and a small model writes them until max_tokens)
            "additionalProperties": False,
        })
        parts.append((f"{base}/properties/arguments", where))
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return JsonSchema(schema, param, tuple(parts))


def strict_formats(schema: Any) -> Any:
    """`schema` as it is enforced: "format": date, time and date-time given as their
    STRICT_FORMATS pattern (where the subschema has no "pattern" of its own), and, as
    llama.cpp's converter does, an object with "properties" but no "additionalProperties"
    closed to other keys: JSON Schema would let a model add keys until max_tokens (pydantic
    and zod leave the keyword out). Not where "allOf" is used: its parts are merged objects."""
    return _rewrite(schema, close=not _mentions(schema, "allOf"))


def _rewrite(schema: Any, close: bool) -> Any:
    if isinstance(schema, list):
        return [_rewrite(item, close) for item in schema]
    if not isinstance(schema, dict):
        return schema
    rewritten: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            rewritten[key] = {name: _rewrite(sub, close) for name, sub in value.items()}
        elif key in _SUBSCHEMAS:
            rewritten[key] = _rewrite(value, close)
        else:
            rewritten[key] = value
    format_name = schema.get("format")
    if isinstance(format_name, str) and format_name in STRICT_FORMATS and "pattern" not in schema:
        del rewritten["format"]
        rewritten["pattern"] = STRICT_FORMATS[format_name]
    if close and isinstance(schema.get("properties"), dict) and not any(
            key in schema for key in ("additionalProperties", "patternProperties",
                                      "unevaluatedProperties")):
        rewritten["additionalProperties"] = False
    return rewritten


def _mentions(schema: Any, keyword: str) -> bool:
    if isinstance(schema, list):
        return any(_mentions(item, keyword) for item in schema)
    if isinstance(schema, dict):
        return keyword in schema or any(_mentions(value, keyword) for value in schema.values())
    return False


def _rebase_refs(schema: Any, base: str) -> Any:
    if isinstance(schema, list):
        return [_rebase_refs(item, base) for item in schema]
    if not isinstance(schema, dict):
        return schema
    rebased = {key: _rebase_refs(value, base) for key, value in schema.items()}
    ref = schema.get("$ref")
    if isinstance(ref, str) and (ref == "#" or ref.startswith("#/")):
        rebased["$ref"] = base + ref[1:]
    return rebased


def explain_compile_error(error: str, spec: JsonSchema) -> EngineError:
    """llguidance's error for a schema → a 400 for the API client that names the keyword, where
    it is and the request field it came from, and says what to do instead."""
    error = error.strip()
    schema = spec.schema
    unimplemented = re.match(r"Unimplemented keys: \[(.*)\]", error)
    if unimplemented:
        keywords = re.findall(r'"((?:[^"\\]|\\.)*)"', unimplemented.group(1))
        pointer = _find(schema, lambda s: any(k in s for k in keywords))
        names = ", ".join(f'"{k}"' for k in keywords)
        return _located(
            spec, pointer,
            lambda at: f"unsupported JSON schema: {names}{at} cannot be enforced while "
                       f"generating; remove {'it' if len(keywords) == 1 else 'them'} or "
                       f"express the constraint with supported keywords ({SUPPORTED_KEYWORDS})")
    if error.startswith("Unknown format:"):
        name = error.removeprefix("Unknown format:").strip()
        pointer = _find(schema, lambda s: s.get("format") == name)
        return _located(
            spec, pointer,
            lambda at: f'unsupported JSON schema: "format": "{name}"{at} is not supported; the '
                       f"supported formats are {', '.join(SUPPORTED_FORMATS)} (or use "
                       '"pattern")')
    if error.startswith("oneOf constraints are not supported"):
        pointer = _find(schema, lambda s: "oneOf" in s)
        return _located(
            spec, pointer,
            lambda at: f'unsupported JSON schema: "oneOf"{at} can be enforced only when no '
                       "value can match two of its branches (different types, or a \"const\" "
                       'property telling them apart); these may overlap: use "anyOf" instead')
    if error.startswith("regex parse error"):
        lines = [line.strip() for line in error.splitlines() if line.strip()]
        pattern = lines[1] if len(lines) > 1 else ""
        reason = lines[-1].removeprefix("error:").strip()
        verdict = "unsupported" if "not supported" in reason else "invalid"
        pointer = _find(schema, lambda s: s.get("pattern") == pattern)
        return _located(
            spec, pointer,
            lambda at: f'{verdict} JSON schema: "pattern": {json.dumps(pattern)}{at} cannot be '
                       f"used: {reason}")
    if "not present in a registry" in error or "retriever" in error:
        pointer = _find(schema, lambda s: _is_remote_ref(s.get("$ref")))
        return _located(
            spec, pointer,
            lambda at: f'unsupported JSON schema: "$ref"{at} can only point inside the schema '
                       f'(like "#/$defs/Name"): {_first_line(error)}')
    return _located(spec, None, lambda at: f"invalid JSON schema: {_first_line(error)}")


def _located(spec: JsonSchema, pointer: str | None,
             message: Callable[[str], str]) -> EngineError:
    """The error, with `pointer` made relative to the request field it came from."""
    param = spec.param
    for prefix, part in spec.parts:
        if pointer is not None and (pointer == prefix or pointer.startswith(prefix + "/")):
            param, pointer = part, pointer[len(prefix):]
            break
    at = "" if pointer is None else f" (at {pointer or 'the top level'})"
    text = message(at)
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return EngineError(text, param=param)


def _find(schema: Any, matches: Callable[[dict[str, Any]], bool], path: str = "") -> str | None:
    """The JSON pointer of the first subschema that `matches`; names under "properties" and
    "$defs" are property names, not keywords, and values of "const"/"enum" are not schemas."""
    if isinstance(schema, list):
        for i, item in enumerate(schema):
            found = _find(item, matches, f"{path}/{i}")
            if found is not None:
                return found
        return None
    if not isinstance(schema, dict):
        return None
    if matches(schema):
        return path
    for key, value in schema.items():
        here = f"{path}/{_escape(key)}"
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            for name, subschema in value.items():
                found = _find(subschema, matches, f"{here}/{_escape(name)}")
                if found is not None:
                    return found
        elif key in _SUBSCHEMAS:
            found = _find(value, matches, here)
            if found is not None:
                return found
    return None


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _is_remote_ref(ref: Any) -> bool:
    return isinstance(ref, str) and not ref.startswith("#")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "it does not compile"
