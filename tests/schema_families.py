"""JSON schema families for structured outputs: one per group of keywords that must be
enforced, each with a prompt that tempts a small model to break it. Used by
tests/test_structured_outputs.py and benchmarks/structured.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    name: str
    prompt: str
    schema: dict[str, Any]
    max_tokens: int = 120
    formats: bool = False  # validate "format" too (jsonschema's format checker)


FAMILIES = [
    Family(
        "strings",
        "Write a two-line poem with a title, as JSON. Use line breaks, tabs and \"quotes\".",
        {"type": "object", "properties": {
            "title": {"type": "string", "maxLength": 40},
            "poem": {"type": "string", "maxLength": 160}},
         "required": ["title", "poem"], "additionalProperties": False},
        max_tokens=150,
    ),
    Family(
        "numbers",
        "Describe a person and the weather, as JSON: age, a score between 0 and 1, a floor "
        "number and the temperature.",
        {"type": "object", "properties": {
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "floor": {"type": "integer", "exclusiveMinimum": -3, "exclusiveMaximum": 12},
            "celsius": {"type": "number", "minimum": -40.5, "maximum": 45}},
         "required": ["age", "score", "floor", "celsius"], "additionalProperties": False},
        max_tokens=80,
    ),
    Family(
        "lengths",
        "Make up a product as JSON: a code like ABC-1234, a short nickname and a tagline.",
        {"type": "object", "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
            "nickname": {"type": "string", "minLength": 3, "maxLength": 8},
            "tagline": {"type": "string", "minLength": 10, "maxLength": 60}},
         "required": ["code", "nickname", "tagline"], "additionalProperties": False},
        max_tokens=80,
    ),
    Family(
        "formats",
        "Make up a calendar event as JSON: its day, start time, exact timestamp, id and the "
        "organiser's email.",
        {"type": "object", "properties": {
            "day": {"type": "string", "format": "date"},
            "starts": {"type": "string", "format": "time", "maxLength": 18},
            "created": {"type": "string", "format": "date-time", "maxLength": 29},
            "id": {"type": "string", "format": "uuid"},
            "organiser": {"type": "string", "format": "email", "maxLength": 40}},
         "required": ["day", "starts", "created", "id", "organiser"],
         "additionalProperties": False},
        max_tokens=200,
        formats=True,
    ),
    Family(
        "choices",
        "Describe a pet as JSON: its kind, size, and either its age or its name.",
        {"type": "object", "properties": {
            "schema_version": {"const": 2},
            "kind": {"enum": ["cat", "dog", "fish", "bird"]},
            "size": {"oneOf": [{"type": "integer", "minimum": 1, "maximum": 100},
                               {"enum": ["small", "medium", "large"]}]},
            "tag": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 999},
                              {"type": "string", "maxLength": 12}]},
            "owner": {"allOf": [
                {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                                  "since": True},
                 "required": ["name"], "additionalProperties": False},
                {"type": "object", "properties": {"since": {"type": "integer", "minimum": 1990,
                                                            "maximum": 2030}},
                 "required": ["since"]}]}},
         "required": ["schema_version", "kind", "size", "tag", "owner"],
         "additionalProperties": False},
        max_tokens=100,
    ),
    Family(
        "recursive",
        "Write a tiny family tree as JSON: one parent with two children, who have no children "
        "of their own.",
        {"$defs": {"person": {
            "type": "object", "properties": {
                "name": {"type": "string", "maxLength": 16},
                "children": {"type": "array", "items": {"$ref": "#/$defs/person"},
                             "maxItems": 2}},
            "required": ["name"], "additionalProperties": False}},
         "$ref": "#/$defs/person"},
        max_tokens=240,
    ),
    Family(
        "objects",
        "Make up a shop as JSON: its name, an optional website, a manager (or null), and stock "
        "counts per fruit.",
        {"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 24},
            "website": {"type": "string", "maxLength": 30},
            "manager": {"type": ["string", "null"], "maxLength": 20},
            "stock": {"type": "object", "additionalProperties": {
                "type": "integer", "minimum": 0, "maximum": 99}, "maxProperties": 3}},
         "required": ["name", "manager", "stock"], "additionalProperties": False},
        max_tokens=100,
    ),
    Family(
        "arrays",
        "Make up a point on a map and a few tags, as JSON.",
        {"type": "object", "properties": {
            "point": {"type": "array", "prefixItems": [
                {"type": "number", "minimum": -90, "maximum": 90},
                {"type": "number", "minimum": -180, "maximum": 180},
                {"type": "string", "maxLength": 16}], "items": False},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 12},
                     "minItems": 1, "maxItems": 3}},
         "required": ["point", "tags"], "additionalProperties": False},
        max_tokens=100,
    ),
]
