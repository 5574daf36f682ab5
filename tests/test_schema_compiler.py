"""Schema → llguidance grammar without a model: which constructs compile, the 400 messages for
those that cannot be enforced, forced-tool-call schemas and the strict date/time formats."""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

import jsonschema
import pytest
from llguidance import LLMatcher

from llamaserve.engine.constraint import JSON_OPTIONS
from llamaserve.engine.grammar import (
    STRICT_FORMATS,
    explain_compile_error,
    strict_formats,
    tool_call_schema,
)
from llamaserve.engine.types import EngineError, JsonSchema

from .schema_families import FAMILIES

PARAM = "response_format.json_schema"


def compile_error(spec: JsonSchema) -> EngineError | None:
    """What SchemaCompiler.compile would raise, minus the tokenizer."""
    grammar = LLMatcher.grammar_from_json_schema(
        json.dumps(strict_formats(spec.schema)), defaults=JSON_OPTIONS,
        overrides={"lenient": False})
    failed, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    return explain_compile_error(messages[0], spec) if failed else None


@pytest.mark.parametrize("family", FAMILIES, ids=[f.name for f in FAMILIES])
def test_every_family_compiles(family) -> None:
    assert compile_error(JsonSchema(family.schema, PARAM)) is None


@pytest.mark.parametrize(("schema", "expected"), [
    ({"type": "object", "properties": {"a": {"not": {"type": "null"}}}},
     '"not" (at /properties/a)'),
    ({"$defs": {"t": {"type": "array", "contains": {"const": 1}}}, "$ref": "#/$defs/t"},
     '"contains" (at /$defs/t)'),
    ({"if": {"type": "string"}, "then": {"maxLength": 3}}, '"if", "then" (at the top level)'),
    ({"type": "object", "dependentRequired": {"a": ["b"]}}, '"dependentRequired"'),
    ({"type": "string", "format": "iri"}, '"format": "iri" (at the top level)'),
    ({"type": "object", "properties": {"p": {"type": "string", "pattern": "^(?!x)y$"}}},
     '"pattern": "^(?!x)y$" (at /properties/p) cannot be used: look-around'),
    ({"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 2}]}, '"oneOf"'),
    ({"type": "integer", "minimum": 5, "maximum": 1}, "minimum (5) is greater than maximum"),
    ({"$ref": "https://example.com/schema.json"}, '"$ref" (at the top level)'),
])
def test_unenforceable_schema_is_named_in_the_error(schema: dict[str, Any],
                                                    expected: str) -> None:
    error = compile_error(JsonSchema(schema, PARAM))
    assert error is not None and error.param == PARAM
    assert expected in str(error), str(error)


def test_property_named_like_a_keyword_is_not_blamed() -> None:
    schema = {"type": "object", "properties": {
        "not": {"type": "string"}, "later": {"type": "array", "uniqueItems": True}}}
    error = compile_error(JsonSchema(schema, PARAM))
    assert error is not None and '"uniqueItems" (at /properties/later)' in str(error)


def test_annotations_and_unknown_keywords_are_not_errors() -> None:
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "title": "T",
              "description": "d", "type": "object", "examples": [{}], "x-vendor": 1,
              "properties": {"a": {"type": "string", "default": "x", "deprecated": True}}}
    assert compile_error(JsonSchema(schema, PARAM)) is None


def test_tool_call_schema_rebases_references_and_names_the_tool() -> None:
    recursive = {"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#"},
                                                                     {"type": "null"}]}}}
    nested = {"$defs": {"X": {"type": "integer"}}, "type": "object",
              "properties": {"x": {"$ref": "#/$defs/X"}, "bad": {"not": {}}}}
    spec = tool_call_schema([("tools[0].function.parameters", {"name": "a",
                                                                "parameters": recursive}),
                             ("tools[2].function.parameters", {"name": "b",
                                                                "parameters": nested})],
                            "tool_choice")
    options = spec.schema["anyOf"]
    assert options[0]["properties"]["arguments"]["properties"]["next"]["anyOf"][0] == \
        {"$ref": "#/anyOf/0/properties/arguments"}
    assert options[1]["properties"]["arguments"]["properties"]["x"] == \
        {"$ref": "#/anyOf/1/properties/arguments/$defs/X"}
    error = compile_error(spec)
    assert error is not None and error.param == "tools[2].function.parameters"
    assert '"not" (at /properties/bad)' in str(error)
    valid = {"name": "a", "arguments": {"next": {"next": None}}}
    jsonschema.validate(valid, spec.schema)  # the rebased references resolve


def test_single_tool_schema_keeps_references_working() -> None:
    nested = {"$defs": {"X": {"type": "integer"}}, "type": "object",
              "properties": {"x": {"$ref": "#/$defs/X"}}}
    spec = tool_call_schema([("functions[0].parameters", {"name": "f", "parameters": nested})],
                            "function_call")
    assert compile_error(spec) is None
    jsonschema.validate({"name": "f", "arguments": {"x": 1}}, spec.schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "f", "arguments": {"x": "1"}}, spec.schema)


def test_strict_date_format_matches_the_calendar() -> None:
    date = re.compile(STRICT_FORMATS["date"])
    day = datetime.date(1, 1, 1)
    checked = 0
    while day.year < 2500:
        assert date.fullmatch(day.isoformat())
        day += datetime.timedelta(days=1)
        checked += 1
    for impossible in ("2023-02-29", "1900-02-29", "2024-04-31", "0000-01-01", "2024-13-01"):
        assert not date.fullmatch(impossible)
    assert date.fullmatch("2000-02-29") and date.fullmatch("2024-02-29")


@pytest.mark.parametrize(("text", "ok"), [
    ("12:30:00Z", True), ("23:59:59.123456789+05:30", True), ("00:00:00z", True),
    ("12:30:00", False), ("23:59:60Z", False), ("24:00:00Z", False),
    ("12:30:00.1234567891Z", False),
])
def test_strict_time_format(text: str, ok: bool) -> None:
    assert bool(re.fullmatch(STRICT_FORMATS["time"], text)) is ok
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    if ok:
        assert checker.conforms(text, "time")


def test_strict_formats_leave_other_keywords_and_own_patterns_alone() -> None:
    schema = {"type": "object", "properties": {
        "d": {"type": "string", "format": "date"},
        "p": {"type": "string", "format": "date", "pattern": "^2024-"},
        "e": {"type": "string", "format": "email"},
        "c": {"const": {"format": "date"}}}}
    rewritten = strict_formats(schema)["properties"]
    assert rewritten["d"] == {"type": "string", "pattern": STRICT_FORMATS["date"]}
    assert rewritten["p"] == schema["properties"]["p"]
    assert rewritten["e"] == schema["properties"]["e"]
    assert rewritten["c"] == schema["properties"]["c"]


def test_objects_without_additional_properties_are_closed_as_llama_cpp_does() -> None:
    from llamaserve.engine.grammar import strict_formats

    schema = {"type": "object", "properties": {"pet": {"$ref": "#/$defs/Pet"}},
              "$defs": {"Pet": {"type": "object", "properties": {"name": {"type": "string"}}}}}
    closed = strict_formats(schema)
    assert closed["additionalProperties"] is False
    assert closed["$defs"]["Pet"]["additionalProperties"] is False
    kept = {"type": "object", "properties": {"a": {"type": "string"}},
            "additionalProperties": {"type": "integer"}}
    assert strict_formats(kept)["additionalProperties"] == {"type": "integer"}
    assert "additionalProperties" not in strict_formats({"type": "object"})  # any object
    merged = {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}},
                        {"type": "object", "properties": {"b": {"type": "string"}}}]}
    assert "additionalProperties" not in strict_formats(merged)["allOf"][0]
