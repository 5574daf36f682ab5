"""Structured outputs on the real SmolLM2: every JSON schema family, JSON mode and forced tool
calls stay valid over many seeded samples at a high temperature, through the official client.

Each family is sampled SAMPLES times at temperature 1.2 (requests of n choices, choice i with
seed + i, decoded together). A sample cut by max_tokens (finish_reason "length") is set aside:
it is unfinished, not invalid. Every finished sample must parse and validate.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from .conftest import assert_openai_error
from .schema_families import FAMILIES, Family

SAMPLES = 50
PER_REQUEST = 10  # n
TEMPERATURE = 1.2
MIN_FINISHED = 0.6  # of the samples, so that validity is judged on most of them


def sample(client: openai.OpenAI, messages: list[dict[str, Any]], max_tokens: int,
           **extra: Any) -> list[Any]:
    """SAMPLES choices: SAMPLES / PER_REQUEST requests, two in flight at a time (so the
    server's sequences stay busy), seeds 1000, 1000 + PER_REQUEST, ..."""
    def one(k: int) -> list[Any]:
        completion = client.chat.completions.create(
            model="smollm2", messages=messages, max_tokens=max_tokens,
            temperature=TEMPERATURE, seed=1000 + k * PER_REQUEST, n=PER_REQUEST, **extra)
        return list(completion.choices)

    with ThreadPoolExecutor(2) as pool:
        batches = list(pool.map(one, range(SAMPLES // PER_REQUEST)))
    return [choice for batch in batches for choice in batch]


def finished(choices: list[Any]) -> list[Any]:
    done = [c for c in choices if c.finish_reason != "length"]
    assert len(done) >= MIN_FINISHED * len(choices), \
        f"only {len(done)} of {len(choices)} samples finished within max_tokens"
    return done


def validator(family: Family) -> jsonschema.Draft202012Validator:
    checker = None
    if family.formats:
        checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
        # without rfc3339-validator installed, jsonschema silently skips date-time
        assert {"date", "time", "date-time", "uuid", "email"} <= set(checker.checkers)
    return jsonschema.Draft202012Validator(family.schema, format_checker=checker)


@pytest.mark.parametrize("family", FAMILIES, ids=[f.name for f in FAMILIES])
def test_json_schema_family_stays_valid_at_high_temperature(client: openai.OpenAI,
                                                            family: Family) -> None:
    choices = sample(client, [{"role": "user", "content": family.prompt}], family.max_tokens,
                     response_format={"type": "json_schema", "json_schema": {
                         "name": family.name, "schema": family.schema, "strict": True}})
    check = validator(family)
    for choice in finished(choices):
        assert choice.finish_reason == "stop"
        content = choice.message.content
        value = json.loads(content)  # raises on raw control characters in strings
        errors = [e.message for e in check.iter_errors(value)]
        assert not errors, f"{content!r}: {errors}"


def test_json_mode_answers_are_json_objects(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Describe your favourite animal as a JSON object "
                                            "with three fields."}]
    choices = sample(client, messages, 120, response_format={"type": "json_object"})
    for choice in finished(choices):
        assert choice.finish_reason == "stop"
        assert isinstance(json.loads(choice.message.content), dict), choice.message.content


WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 24},
    "unit": {"enum": ["celsius", "fahrenheit"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "days"], "additionalProperties": False}
# pydantic-style parameters: a reference into the parameters' own $defs
BOOKING = {"$defs": {"Guest": {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 20},
    "age": {"type": ["integer", "null"], "minimum": 0, "maximum": 120}},
    "required": ["name", "age"], "additionalProperties": False}},
    "type": "object", "properties": {
        "hotel": {"type": "string", "maxLength": 24},
        "guests": {"type": "array", "items": {"$ref": "#/$defs/Guest"}, "minItems": 1,
                   "maxItems": 2}},
    "required": ["hotel", "guests"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather forecast",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "book_hotel", "description": "Book a hotel room",
                                      "parameters": BOOKING}},
]
PARAMETERS = {"get_weather": WEATHER, "book_hotel": BOOKING}


def test_forced_tool_calls_validate_against_the_tools_parameters(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Book a room in Rome for me and my son, and tell me "
                                            "the weather there this week."}]
    choices = sample(client, messages, 100, tools=TOOLS, tool_choice="required")
    called = set()
    for choice in finished(choices):
        assert choice.finish_reason == "tool_calls", choice.message.content
        (call,) = choice.message.tool_calls
        jsonschema.validate(json.loads(call.function.arguments), PARAMETERS[call.function.name])
        called.add(call.function.name)
    assert called == set(PARAMETERS)  # both branches of the tool-call schema are reachable


def test_named_tool_with_refs_in_its_parameters(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="smollm2", max_tokens=100, temperature=TEMPERATURE, seed=5, n=4, tools=TOOLS,
        messages=[{"role": "user", "content": "Book a room in Oslo for Ann, 30."}],
        tool_choice={"type": "function", "function": {"name": "book_hotel"}})
    for choice in completion.choices:
        if choice.finish_reason == "length":
            continue
        (call,) = choice.message.tool_calls
        assert call.function.name == "book_hotel"
        jsonschema.validate(json.loads(call.function.arguments), BOOKING)


def test_logprobs_with_a_schema_describe_the_model(client: openai.OpenAI) -> None:
    # the mask changes what can be sampled; logprobs still show the model's own distribution,
    # so every entry is finite and the chosen token is among the model's candidates
    family = FAMILIES[1]
    completion = client.chat.completions.create(
        model="smollm2", max_tokens=family.max_tokens, temperature=0, logprobs=True,
        top_logprobs=3, messages=[{"role": "user", "content": family.prompt}],
        response_format={"type": "json_schema", "json_schema": {"name": "n",
                                                                "schema": family.schema}})
    choice = completion.choices[0]
    jsonschema.validate(json.loads(choice.message.content), family.schema)
    entries = choice.logprobs.content
    assert "".join(e.token for e in entries) == choice.message.content
    assert all(e.logprob > float("-inf") and len(e.top_logprobs) == 3 for e in entries)


def test_streamed_json_schema_answer_matches_the_whole_one(client: openai.OpenAI) -> None:
    family = FAMILIES[0]
    body: dict[str, Any] = dict(
        model="smollm2", max_tokens=family.max_tokens, temperature=TEMPERATURE, seed=3,
        messages=[{"role": "user", "content": family.prompt}],
        response_format={"type": "json_schema", "json_schema": {"name": "s",
                                                                "schema": family.schema}})
    whole = client.chat.completions.create(**body).choices[0].message.content
    chunks = list(client.chat.completions.create(**body, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


UNSUPPORTED = {"type": "object", "properties": {
    "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}}}


def test_unsupported_keyword_is_400_naming_it(http: httpx.Client) -> None:
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Tags?"}],
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "tags", "schema": UNSUPPORTED}}}
    error = assert_openai_error(http.post("/v1/chat/completions", json=body), 400)
    assert error["param"] == "response_format.json_schema"
    assert '"uniqueItems" (at /properties/tags)' in error["message"], error["message"]


def test_unsupported_keyword_in_a_tool_is_400_naming_the_tool(http: httpx.Client) -> None:
    tools = [TOOLS[0], {"type": "function", "function": {"name": "tag",
                                                         "parameters": UNSUPPORTED}}]
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Tags?"}],
            "tools": tools, "tool_choice": "required"}
    error = assert_openai_error(http.post("/v1/chat/completions", json=body), 400)
    assert error["param"] == "tools[1].function.parameters"
    assert '"uniqueItems" (at /properties/tags)' in error["message"], error["message"]


def test_unknown_format_is_400_naming_it(http: httpx.Client) -> None:
    schema = {"type": "object",
              "properties": {"site": {"type": "string", "format": "uri-reference"}}}
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Site?"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "s",
                                                                       "schema": schema}}}
    error = assert_openai_error(http.post("/v1/chat/completions", json=body), 400)
    assert error["param"] == "response_format.json_schema"
    assert '"format": "uri-reference" (at /properties/site)' in error["message"], error["message"]
