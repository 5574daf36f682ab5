"""tools / tool_choice and the legacy functions / function_call on the real SmolLM2."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from .conftest import assert_openai_error

WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 40},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city"], "additionalProperties": False}
TIME = {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 40}},
        "required": ["timezone"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description":
                                      "Current weather in a city", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a timezone",
                                      "parameters": TIME}},
]
ASK = [{"role": "user", "content": "What's the weather like in Paris today?"}]
PARAMS = {"get_weather": WEATHER, "get_time": TIME}


def call(client: openai.OpenAI, **extra):
    return client.chat.completions.create(**{"model": "smollm2", "messages": ASK,
                                             "tools": TOOLS, "max_tokens": 80, **extra})


@pytest.mark.parametrize("seed", [1, 2])
def test_required_tool_call_parses_and_validates(client: openai.OpenAI, seed: int) -> None:
    completion = call(client, tool_choice="required", temperature=1, seed=seed)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (tool_call,) = choice.message.tool_calls
    assert tool_call.id.startswith("call_") and tool_call.type == "function"
    assert tool_call.function.name in PARAMS
    jsonschema.validate(json.loads(tool_call.function.arguments), PARAMS[tool_call.function.name])


def test_named_tool_choice_calls_that_function(client: openai.OpenAI) -> None:
    completion = call(client, temperature=0,
                      tool_choice={"type": "function", "function": {"name": "get_time"}})
    (tool_call,) = completion.choices[0].message.tool_calls
    assert tool_call.function.name == "get_time"
    jsonschema.validate(json.loads(tool_call.function.arguments), TIME)


def test_streamed_tool_call_reassembles_to_the_same_arguments(client: openai.OpenAI) -> None:
    whole = call(client, tool_choice="required", temperature=0).choices[0].message.tool_calls[0]
    chunks = list(call(client, tool_choice="required", temperature=0, stream=True))
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    first = deltas[0]
    assert first.index == 0 and first.id.startswith("call_") and first.type == "function"
    assert first.function.name == whole.function.name
    assert all(d.function.name is None and d.id is None for d in deltas[1:])
    assert "".join(d.function.arguments for d in deltas) == whole.function.arguments
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_tool_choice_none_answers_in_text(client: openai.OpenAI) -> None:
    choice = call(client, tool_choice="none", temperature=0, max_tokens=20).choices[0]
    assert choice.message.tool_calls is None and choice.message.content
    assert choice.finish_reason in ("stop", "length")


def test_auto_without_a_call_answers_in_text(client: openai.OpenAI) -> None:
    choice = call(client, temperature=0, max_tokens=30).choices[0]
    assert choice.message.content and choice.message.tool_calls is None


# With tool_choice "auto" the reply is parsed for the model's own tool-call syntax. SmolLM2 is
# too small to choose a tool by itself, so a grammar makes it write each syntax; the parsing
# and streaming under test are the real ones.
HERMES = ('root ::= "<tool_call>\\n{\\"name\\": \\"get_weather\\", \\"arguments\\": '
          '{\\"city\\": \\"" [A-Za-z ]{1,20} "\\"}}\\n</tool_call>"')
LLAMA31 = ('root ::= "{\\"name\\": \\"get_weather\\", \\"parameters\\": {\\"city\\": \\"" '
           '[A-Za-z]{1,20} "\\"}}"')


@pytest.mark.parametrize("grammar", [HERMES, LLAMA31], ids=["hermes", "llama3.1"])
def test_auto_parses_the_models_tool_call_syntax(client: openai.OpenAI, grammar: str) -> None:
    choice = call(client, temperature=0, extra_body={"grammar": grammar}).choices[0]
    assert choice.finish_reason == "tool_calls"
    (tool_call,) = choice.message.tool_calls
    assert tool_call.function.name == "get_weather"
    jsonschema.validate(json.loads(tool_call.function.arguments), WEATHER)
    streamed = list(call(client, temperature=0, stream=True, extra_body={"grammar": grammar}))
    deltas = [d for c in streamed if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert "".join(d.function.arguments for d in deltas) == tool_call.function.arguments
    assert not any(c.choices[0].delta.content for c in streamed if c.choices)


def test_legacy_functions_answer_with_function_call(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="smollm2", messages=ASK, temperature=0, max_tokens=80,
        functions=[t["function"] for t in TOOLS], function_call={"name": "get_weather"})
    choice = completion.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.function_call.name == "get_weather"
    jsonschema.validate(json.loads(choice.message.function_call.arguments), WEATHER)


def test_tool_choice_naming_an_unknown_function_is_400(http: httpx.Client) -> None:
    body = {"model": "smollm2", "messages": ASK, "tools": TOOLS,
            "tool_choice": {"type": "function", "function": {"name": "launch"}}}
    error = assert_openai_error(http.post("/v1/chat/completions", json=body), 400)
    assert error["param"] == "tool_choice"


def test_required_without_tools_is_400(http: httpx.Client) -> None:
    body = {"model": "smollm2", "messages": ASK, "tool_choice": "required"}
    assert assert_openai_error(http.post("/v1/chat/completions", json=body), 400)["param"] == \
        "tool_choice"


def test_forced_tool_and_json_mode_together_is_400(http: httpx.Client) -> None:
    body = {"model": "smollm2", "messages": ASK, "tools": TOOLS, "tool_choice": "required",
            "response_format": {"type": "json_object"}}
    assert_openai_error(http.post("/v1/chat/completions", json=body), 400)
