"""POST /v1/responses (OpenAI's Responses API) against SmolLM2, with the official openai client
and raw HTTP; every answer is checked against the SDK's own models."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai.types.responses import Response, ResponseItemList, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from .builders import data_uri, image_bytes
from .conftest import LiveServer, assert_openai_error

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}},
           "required": ["city"], "additionalProperties": False}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Current weather in a city",
          "parameters": WEATHER, "strict": True}]
STREAM_EVENTS = TypeAdapter(ResponseStreamEvent)


def create(http: httpx.Client, **body: Any) -> dict[str, Any]:
    """POST /v1/responses; the raw JSON, checked against the SDK's Response model."""
    response = http.post("/v1/responses", json={"model": "smollm2", "temperature": 0, **body})
    assert response.status_code == 200, response.text
    Response.model_validate(response.json())
    return response.json()


def sse_events(http: httpx.Client, **body: Any) -> list[dict[str, Any]]:
    """The events of a streamed response; each frame's `event:` is its data's type."""
    with http.stream("POST", "/v1/responses", json={"model": "smollm2", "temperature": 0,
                                                    "stream": True, **body}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    events = []
    for frame in filter(None, text.split("\n\n")):
        event_line, data_line = frame.split("\n")
        event = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {event['type']}"
        STREAM_EVENTS.validate_python(event)
        events.append(event)
    return events


# -- one answer ------------------------------------------------------------------------------

def test_string_input_answers_with_a_message_and_usage(client: openai.OpenAI) -> None:
    response = client.responses.create(model="smollm2", input="Say this is a test",
                                       max_output_tokens=24, temperature=0)
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.model == "smollm2" and response.status in ("completed", "incomplete")
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_") and response.output_text.strip()
    usage = response.usage
    assert usage is not None and usage.input_tokens > 5 and 0 < usage.output_tokens <= 24
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert usage.input_tokens_details.cached_tokens >= 0


def test_request_settings_are_echoed(http: httpx.Client) -> None:
    body = create(http, input="Hi", max_output_tokens=4, top_p=0.5, metadata={"run": "7"},
                  instructions="Be brief.", user="u1", store=False, parallel_tool_calls=False,
                  reasoning={"effort": "low"}, text={"format": {"type": "text"}})
    assert body["temperature"] == 0 and body["top_p"] == 0.5
    assert body["metadata"] == {"run": "7"} and body["instructions"] == "Be brief."
    assert body["max_output_tokens"] == 4 and body["user"] == "u1" and body["store"] is False
    assert body["parallel_tool_calls"] is False and body["tool_choice"] == "auto"
    assert body["reasoning"]["effort"] == "low" and body["text"]["format"]["type"] == "text"
    assert body["previous_response_id"] is None and body["tools"] == []


def test_a_list_of_items_is_the_conversation(http: httpx.Client) -> None:
    start = [
        {"role": "developer", "content": "You are terse."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
    ]
    one = create(http, input=start, max_output_tokens=4)
    more = [{"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Name a colour."}]
    many = create(http, input=start + more, max_output_tokens=4)
    assert many["usage"]["input_tokens"] > one["usage"]["input_tokens"] + 8


def test_instructions_reach_the_model(http: httpx.Client, tokenizer: Any) -> None:
    short, long = "Be brief.", "Always answer with the single word 'banana', whatever I ask."
    plain = create(http, input="Hi", max_output_tokens=2, instructions=short)
    told = create(http, input="Hi", max_output_tokens=2, instructions=long)
    extra = len(tokenizer.tokenize(long.encode(), add_bos=False)) - \
        len(tokenizer.tokenize(short.encode(), add_bos=False))
    assert told["usage"]["input_tokens"] - plain["usage"]["input_tokens"] == extra


def test_max_output_tokens_makes_an_incomplete_response(http: httpx.Client) -> None:
    body = create(http, input="Write a long story about a dragon.", max_output_tokens=3)
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete" and body["usage"]["output_tokens"] == 3


def test_logprobs_are_included_on_request(http: httpx.Client) -> None:
    body = create(http, input="Hi", max_output_tokens=3, top_logprobs=2,
                  include=["message.output_text.logprobs"])
    logprobs = body["output"][0]["content"][0]["logprobs"]
    assert len(logprobs) == 3 and all(len(entry["top_logprobs"]) == 2 for entry in logprobs)
    assert "".join(entry["token"] for entry in logprobs) == body["output"][0]["content"][0]["text"]


# -- structured output -----------------------------------------------------------------------

class City(BaseModel):
    name: str
    population: int


def test_json_schema_format_output_validates(http: httpx.Client) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                               "population": {"type": "integer"}},
              "required": ["name", "population"], "additionalProperties": False}
    body = create(http, input="Describe Paris as JSON.", max_output_tokens=60,
                  text={"format": {"type": "json_schema", "name": "city", "schema": schema,
                                   "strict": True}})
    text = body["output"][0]["content"][0]["text"]
    jsonschema.validate(json.loads(text), schema)
    assert body["text"]["format"]["name"] == "city"


def test_sdk_parse_fills_output_parsed(client: openai.OpenAI) -> None:
    response = client.responses.parse(model="smollm2", input="Describe Paris.",
                                      text_format=City, max_output_tokens=60, temperature=0)
    assert isinstance(response.output_parsed, City)


def test_json_object_format_is_an_object(http: httpx.Client) -> None:
    body = create(http, input="Give me a JSON object.", max_output_tokens=60,
                  text={"format": {"type": "json_object"}})
    assert body["status"] == "completed"
    assert isinstance(json.loads(body["output"][0]["content"][0]["text"]), dict)


# -- tools -----------------------------------------------------------------------------------

def test_tool_round_trip_with_previous_response_id(client: openai.OpenAI) -> None:
    asked = client.responses.create(
        model="smollm2", input="What's the weather like in Paris today?", tools=TOOLS,
        tool_choice={"type": "function", "name": "get_weather"}, temperature=0,
        max_output_tokens=60)
    (call,) = asked.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id.startswith("call_") and call.id and call.status == "completed"
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    answered = client.responses.create(
        model="smollm2", previous_response_id=asked.id, tools=TOOLS, temperature=0,
        tool_choice="none", max_output_tokens=20,
        input=[{"type": "function_call_output", "call_id": call.call_id,
                "output": '{"temperature_c": 21, "sky": "sunny"}'}])
    assert answered.output[0].type == "message" and answered.output_text.strip()
    assert answered.previous_response_id == asked.id
    history = client.responses.input_items.list(answered.id, order="asc").data
    assert [item.type for item in history] == ["message", "function_call",
                                               "function_call_output"]
    assert history[1].call_id == history[2].call_id == call.call_id


def test_required_tool_choice_streams_the_arguments(http: httpx.Client) -> None:
    events = sse_events(http, input="Weather in Rome?", tools=TOOLS, tool_choice="required",
                        max_output_tokens=60)
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    (done,) = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert "".join(deltas) == done["arguments"] and done["name"] == "get_weather"
    jsonschema.validate(json.loads(done["arguments"]), WEATHER)
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert final["output"][0]["arguments"] == done["arguments"]


def test_allowed_tools_limits_the_functions(http: httpx.Client) -> None:
    time_tool = {"type": "function", "name": "get_time", "description": "Time in a timezone",
                 "parameters": {"type": "object", "properties": {"zone": {"type": "string"}},
                                "required": ["zone"]}}
    body = create(http, input="What's the weather like in Paris?", max_output_tokens=40,
                  tools=[*TOOLS, time_tool], tool_choice={
                      "type": "allowed_tools", "mode": "required",
                      "tools": [{"type": "function", "name": "get_time"}]})
    (call,) = body["output"]
    assert call["type"] == "function_call" and call["name"] == "get_time"
    assert body["tool_choice"]["type"] == "allowed_tools" and len(body["tools"]) == 2


def test_tool_choice_naming_an_unknown_function_is_a_400(http: httpx.Client) -> None:
    response = http.post("/v1/responses", json={
        "model": "smollm2", "input": "Hi", "tools": TOOLS,
        "tool_choice": {"type": "function", "name": "nope"}})
    assert assert_openai_error(response, 400)["param"] == "tool_choice"


# -- conversation state ----------------------------------------------------------------------

def test_previous_response_id_continues_the_conversation(client: openai.OpenAI) -> None:
    first = client.responses.create(model="smollm2", input="My name is Ada.",
                                    max_output_tokens=8, temperature=0)
    second = client.responses.create(model="smollm2", input="What is my name?",
                                     previous_response_id=first.id, max_output_tokens=8,
                                     temperature=0)
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    listed = client.responses.input_items.list(second.id, order="asc")
    assert isinstance(listed, object) and listed.data
    texts = [part.text for item in listed.data for part in getattr(item, "content", [])]
    assert texts[0] == "My name is Ada." and texts[-1] == "What is my name?"
    assert first.output_text in texts  # the earlier answer is part of the input too
    assert [item.role for item in listed.data] == ["user", "assistant", "user"]


def test_input_items_page_and_order(http: httpx.Client) -> None:
    body = create(http, input=[{"role": "user", "content": f"Item {i}"} for i in range(3)],
                  max_output_tokens=1)
    url = f"/v1/responses/{body['id']}/input_items"
    newest = http.get(url, params={"limit": 2}).json()
    ResponseItemList.model_validate(newest)
    assert [item["content"][0]["text"] for item in newest["data"]] == ["Item 2", "Item 1"]
    assert newest["has_more"] is True and newest["first_id"] == newest["data"][0]["id"]
    rest = http.get(url, params={"limit": 2, "after": newest["last_id"]}).json()
    assert [item["content"][0]["text"] for item in rest["data"]] == ["Item 0"]
    assert rest["has_more"] is False
    assert_openai_error(http.get(url, params={"limit": 0}), 400)


def test_retrieve_then_delete(client: openai.OpenAI, http: httpx.Client) -> None:
    created = create(http, input="Hi", max_output_tokens=3)
    assert http.get(f"/v1/responses/{created['id']}").json() == created
    assert client.responses.retrieve(created["id"]).output_text == \
        created["output"][0]["content"][0]["text"]
    deleted = http.delete(f"/v1/responses/{created['id']}")
    assert deleted.json() == {"id": created["id"], "object": "response.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created["id"])
    error = assert_openai_error(http.delete(f"/v1/responses/{created['id']}"), 404)
    assert error["code"] == "response_not_found" and error["param"] == "response_id"
    gone = http.post("/v1/responses", json={"model": "smollm2", "input": "Hi",
                                            "previous_response_id": created["id"]})
    error = assert_openai_error(gone, 404)
    assert error["param"] == "previous_response_id" and error["code"] == "response_not_found"


def test_store_false_is_not_retrievable(http: httpx.Client) -> None:
    created = create(http, input="Hi", max_output_tokens=2, store=False)
    assert_openai_error(http.get(f"/v1/responses/{created['id']}"), 404)


# -- streaming -------------------------------------------------------------------------------

def test_stream_events_come_in_order(http: httpx.Client) -> None:
    events = sse_events(http, input="Say hello.", max_output_tokens=12)
    numbers = [event["sequence_number"] for event in events]
    assert numbers == sorted(set(numbers)) and numbers[0] == 0
    kinds = [event["type"] for event in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas >= 1
    assert kinds == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", *["response.output_text.delta"] * deltas,
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", kinds[-1]]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    text = "".join(event["delta"] for event in events if "delta" in event)
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == text and final["usage"]
    assert events[0]["response"]["status"] == "in_progress" and not events[0]["response"]["output"]


def test_stream_max_output_tokens_ends_incomplete(http: httpx.Client) -> None:
    events = sse_events(http, input="Write a long story.", max_output_tokens=2)
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"]["reason"] == "max_output_tokens"


def test_sdk_stream_helper(client: openai.OpenAI) -> None:
    deltas = []
    with client.responses.stream(model="smollm2", input="Say hello.", max_output_tokens=60,
                                 temperature=0) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text and final.output_text
    stored = client.responses.retrieve(final.id)
    assert stored.output_text == final.output_text


# -- images ----------------------------------------------------------------------------------

def test_image_on_a_text_model_is_a_400_naming_the_part(http: httpx.Client) -> None:
    part = {"type": "input_image", "image_url": data_uri(image_bytes("PNG"), "image/png")}
    response = http.post("/v1/responses", json={"model": "smollm2", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "What is it?"}, part]}]})
    error = assert_openai_error(response, 400)
    assert error["param"] == "input[0].content[1]" and error["code"] == "image_not_supported"


def test_input_image_reaches_a_vision_model(vision_server: LiveServer) -> None:
    uri = data_uri(image_bytes("PNG"), "image/png")
    with httpx.Client(base_url=vision_server.base_url, timeout=120) as http:
        text_only = create(http, input=[{"role": "user", "content": "What is it?"}],
                           max_output_tokens=2)
        with_image = create(http, max_output_tokens=2, input=[{"role": "user", "content": [
            {"type": "input_text", "text": "What is it?"},
            {"type": "input_image", "image_url": uri, "detail": "auto"}]}])
    assert with_image["usage"]["input_tokens"] > text_only["usage"]["input_tokens"] + 10


# -- bad requests ----------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "param"), [
    ({"input": "Hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "Hi", "tool_choice": {"type": "file_search"}}, "tool_choice.type"),
    ({"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input[0].content[0].image_url"),
    ({"input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": [
        {"type": "refusal", "refusal": "no"}]}]}, "input[0].output[0].type"),
    ({"input": "Hi", "tools": TOOLS, "tool_choice": {
        "type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "x"}]}},
     "tool_choice.tools[0]"),
    ({"input": "Hi", "temperature": 3}, "temperature"),
    ({"input": "Hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "Hi", "text": {"format": {"type": "json_schema", "name": "x"}}},
     "text.format.schema"),
    ({"input": "Hi", "metadata": {str(i): "v" for i in range(17)}}, "metadata"),
    ({"input": "Hi", "background": True}, "background"),
    ({"input": "Hi", "conversation": "conv_1"}, "conversation"),
    ({"input": "Hi", "prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"input": [{"role": "user", "content": "Hi", "colour": "red"}]}, "input[0].colour"),
    ({"input": "Hi", "frobnicate": 1}, "frobnicate"),
    ({"input": []}, "input"),
    ({}, "input"),
    ({"input": "Hi", "model": "no-such-model"}, "model"),
])
def test_bad_requests_are_400s_naming_the_field(http: httpx.Client, body: dict[str, Any],
                                                 param: str) -> None:
    response = http.post("/v1/responses", json={"model": "smollm2", **body})
    error = assert_openai_error(response, 404 if param == "model" else 400)
    assert error["param"] == param, error


def test_unknown_parameter_says_so(http: httpx.Client) -> None:
    response = http.post("/v1/responses", json={"model": "smollm2", "input": "Hi", "foo": 1})
    error = assert_openai_error(response, 400)
    assert error["message"] == "Unknown parameter: 'foo'." and error["code"] == "unknown_parameter"


def test_trailing_slash_route_answers_directly(server: LiveServer) -> None:
    response = httpx.post(f"{server.base_url}/v1/responses/", timeout=120, json={
        "model": "smollm2", "input": "Hi", "max_output_tokens": 1})
    assert response.status_code == 200 and response.json()["object"] == "response"


def test_a_codex_shaped_conversation_is_served(http: httpx.Client) -> None:
    """The fields and items Codex CLI 0.171.0 sends (seen on the wire; texts shortened): its
    client_metadata, encrypted reasoning asked for, store false, history sent back in full."""
    tool = {"type": "function", "name": "exec_command", "description": "Runs a command.",
            "strict": False, "parameters": {"type": "object", "properties": {
                "cmd": {"type": "string"}}, "required": ["cmd"], "additionalProperties": False}}
    start = [
        {"type": "message", "id": "msg_1", "role": "developer",
         "content": [{"type": "input_text", "text": "You are a coding agent."}]},
        {"type": "message", "id": "msg_2", "role": "user",
         "content": [{"type": "input_text", "text": "List the files."}]},
    ]
    codex = {"model": "smollm2", "stream": True, "store": False, "parallel_tool_calls": True,
             "include": ["reasoning.encrypted_content"], "reasoning": {"summary": "auto"},
             "prompt_cache_key": "01a23ac2", "client_metadata": {"x-codex-turn-metadata": "{}"},
             "tools": [tool], "max_output_tokens": 60}
    called = sse_events(http, **codex, input=start, tool_choice="required")
    call = next(e["item"] for e in called if e["type"] == "response.output_item.done")
    assert call["type"] == "function_call" and call["name"] == "exec_command"
    output = {"type": "function_call_output", "id": "fco_1", "call_id": call["call_id"],
              "output": "Process exited with code 0\nOutput:\nREADME.md\n"}
    answered = sse_events(http, **codex, input=[*start, call, output], tool_choice="none")
    assert answered[-1]["type"] in ("response.completed", "response.incomplete")
    assert answered[-1]["response"]["output"][0]["type"] == "message"
