"""Anthropic's Messages API against the live server, through the official `anthropic` SDK:
/v1/messages (plain and streamed) and /v1/messages/count_tokens, with SmolLM2."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import jsonschema
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from .builders import image_bytes
from .conftest import LiveServer, start_server

WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}
HI = {"role": "user", "content": "Say hello."}


def sdk(server: LiveServer, **options: object) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key=options.pop("api_key", "KEY"),
                               max_retries=0, timeout=120, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def claude(server: LiveServer) -> anthropic.Anthropic:
    return sdk(server)


def post(server: LiveServer, path: str, body: object, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, headers=headers, timeout=120)


def assert_anthropic_error(response: httpx.Response, status: int, error_type: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and set(body) == {"type", "error"}, body
    assert set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] == error_type, body
    assert body["error"]["message"]
    return body["error"]["message"]


# -- messages.create -------------------------------------------------------------------------

def test_create_answers_a_message_the_sdk_validates(server: LiveServer) -> None:
    response = post(server, "/v1/messages", {
        "model": "smollm2", "max_tokens": 16, "system": "You are a friendly assistant.",
        "messages": [HI]}, **{"anthropic-version": "2023-06-01"})
    assert response.status_code == 200, response.text
    message = Message.model_validate(response.json())
    assert message.id.startswith("msg_") and message.role == "assistant"
    assert message.model == "smollm2"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")
    usage = message.usage
    assert usage.input_tokens + (usage.cache_read_input_tokens or 0) > 10
    assert 0 < usage.output_tokens <= 16 and usage.cache_creation_input_tokens == 0


def test_system_as_text_blocks_and_a_multi_turn_conversation(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="smollm2", max_tokens=12,
        system=[{"type": "text", "text": "You are terse."},
                {"type": "text", "text": "Answer in English.",
                 "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "My name is Ada."},
                  {"role": "assistant", "content": [{"type": "text", "text": "Hello Ada!"}]},
                  {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]}])
    assert message.content and message.content[0].type == "text"
    assert message.content[0].text.strip()


def test_max_tokens_ends_with_stop_reason_max_tokens(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="smollm2", max_tokens=3, messages=[
        {"role": "user", "content": "Write a long story about a dragon."}])
    assert message.stop_reason == "max_tokens" and message.stop_sequence is None
    assert message.usage.output_tokens == 3


def test_stop_sequence_names_the_sequence_that_matched(claude: anthropic.Anthropic) -> None:
    # this SDK has no `temperature` argument (its newest models fix it): sent as extra_body
    ask = {"model": "smollm2", "max_tokens": 24, "extra_body": {"temperature": 0},
           "messages": [{"role": "user", "content": "Write a sentence about the sea."}]}
    free = claude.messages.create(**ask)  # type: ignore[arg-type]
    words = free.content[0].text.split()  # type: ignore[union-attr]
    assert len(words) >= 4, words
    stop = words[2]
    stopped = claude.messages.create(**ask, stop_sequences=["NEVER-IN-OUTPUT", stop])  # type: ignore[arg-type]
    assert stopped.stop_reason == "stop_sequence"
    assert stopped.stop_sequence == stop
    text = stopped.content[0].text if stopped.content else ""  # type: ignore[union-attr]
    assert stop not in text and free.content[0].text.startswith(text)  # type: ignore[union-attr]


def test_sampling_fields_thinking_and_metadata_are_accepted(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="smollm2", max_tokens=4, messages=[HI], metadata={"user_id": "user-1"},
        thinking={"type": "enabled", "budget_tokens": 1024}, service_tier="auto",
        extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 20,
                    "context_management": {"edits": []}})
    assert message.type == "message"
    assert all(block.type == "text" for block in message.content)  # no thinking blocks


def test_image_block_on_the_vision_model(vision_server: LiveServer) -> None:
    picture = base64.b64encode(image_bytes()).decode()
    client = sdk(vision_server)
    question = {"type": "text", "text": "What colours are in this picture?"}
    with_image = client.messages.create(model="smollm2", max_tokens=4, messages=[
        {"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": picture}},
            question]}])
    without = client.messages.count_tokens(model="smollm2", messages=[
        {"role": "user", "content": [question]}])
    usage = with_image.usage
    # the tiny projector's image is 17 prompt tokens (16 patches and a marker)
    assert usage.input_tokens + (usage.cache_read_input_tokens or 0) == without.input_tokens + 17


def test_image_on_a_text_only_model_is_a_400(claude: anthropic.Anthropic) -> None:
    picture = base64.b64encode(image_bytes()).decode()
    with pytest.raises(anthropic.BadRequestError) as raised:
        claude.messages.create(model="smollm2", max_tokens=4, messages=[
            {"role": "user", "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": picture}}]}])
    error = raised.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error" and "messages.0.content.1" in error["message"]


# -- tools -----------------------------------------------------------------------------------

def test_forced_tool_use_input_matches_the_input_schema(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="smollm2", max_tokens=60, tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    assert message.stop_reason == "tool_use"
    [call] = [block for block in message.content if block.type == "tool_use"]
    assert call.id.startswith("toolu_") and call.name == "get_weather"
    jsonschema.validate(call.input, WEATHER["input_schema"])


def test_tool_choice_any_calls_one_of_the_tools(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="smollm2", max_tokens=60, tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": "Weather in Oslo, in celsius?"}])
    calls = [block for block in message.content if block.type == "tool_use"]
    assert len(calls) == 1 and message.stop_reason == "tool_use"


def test_tool_result_round_trip_is_answered(claude: anthropic.Anthropic) -> None:
    ask = {"role": "user", "content": "What is the weather in Paris?"}
    first = claude.messages.create(
        model="smollm2", max_tokens=60, tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"}, messages=[ask])  # type: ignore[list-item]
    call = next(block for block in first.content if block.type == "tool_use")
    second = claude.messages.create(
        model="smollm2", max_tokens=30, extra_body={"temperature": 0},
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "none"},
        messages=[ask, {"role": "assistant", "content": first.content},  # type: ignore[list-item]
                  {"role": "user", "content": [
                      {"type": "tool_result", "tool_use_id": call.id,
                       "content": [{"type": "text", "text": "18 degrees and sunny"}]},
                      {"type": "text", "text": "Tell me in one sentence."}]}])
    assert second.stop_reason in ("end_turn", "max_tokens")
    assert second.content[0].type == "text" and second.content[0].text.strip()


# -- messages.stream -------------------------------------------------------------------------

def test_stream_text_deltas_reassemble_to_the_final_message(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="smollm2", max_tokens=20, messages=[HI]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1
    assert final.content[0].type == "text" and "".join(pieces) == final.content[0].text
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens > 0


def test_stream_events_are_anthropic_events_in_order(server: LiveServer) -> None:
    body = {"model": "smollm2", "max_tokens": 8, "stream": True, "messages": [HI]}
    names, events = [], []
    with httpx.stream("POST", f"{server.base_url}/v1/messages", json=body, timeout=120) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        for line in raw.iter_lines():
            if line.startswith("event: "):
                names.append(line.removeprefix("event: "))
            elif line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    adapter: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)
    parsed = [adapter.validate_python(event) for event in events if event["type"] != "ping"]
    assert names == [event["type"] for event in events]
    kinds = [event.type for event in parsed]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds[1] == "content_block_start" and kinds[-3] == "content_block_stop"
    assert set(kinds[2:-3]) == {"content_block_delta"}
    start, delta = parsed[0], parsed[-2]
    assert start.message.content == [] and start.message.stop_reason is None  # type: ignore[union-attr]
    assert delta.usage.output_tokens == 8 and delta.delta.stop_reason == "max_tokens"  # type: ignore[union-attr]


def test_stream_tool_input_deltas_reassemble_to_the_tool_input(
    claude: anthropic.Anthropic,
) -> None:
    with claude.messages.stream(
        model="smollm2", max_tokens=60, tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "What is the weather in Rome?"}],
    ) as stream:
        partial = [event.delta.partial_json for event in stream
                   if event.type == "content_block_delta"
                   and event.delta.type == "input_json_delta"]
        final = stream.get_final_message()
    [call] = [block for block in final.content if block.type == "tool_use"]
    assert json.loads("".join(partial)) == call.input
    jsonschema.validate(call.input, WEATHER["input_schema"])
    assert final.stop_reason == "tool_use"


# -- count_tokens ----------------------------------------------------------------------------

def test_count_tokens_equals_the_prompt_of_the_same_request(claude: anthropic.Anthropic) -> None:
    request = {"model": "smollm2", "system": "You count tokens.", "tools": [WEATHER],
               "messages": [{"role": "user", "content": "A question about counting, 7381?"}]}
    counted = claude.messages.count_tokens(**request).input_tokens  # type: ignore[arg-type]
    message = claude.messages.create(max_tokens=2, **request)  # type: ignore[arg-type]
    usage = message.usage
    # Anthropic's input_tokens leave out the cache reads: the prompt is their sum
    assert counted == usage.input_tokens + (usage.cache_read_input_tokens or 0) \
        + (usage.cache_creation_input_tokens or 0)
    again = claude.messages.create(max_tokens=2, **request)  # type: ignore[arg-type]
    assert (again.usage.cache_read_input_tokens or 0) > counted // 2  # served from the cache
    assert again.usage.input_tokens + (again.usage.cache_read_input_tokens or 0) == counted


def test_stream_message_start_tells_the_prompt_size(claude: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": "Count for me: 11, 12, 13?"}]
    counted = claude.messages.count_tokens(model="smollm2", messages=messages).input_tokens  # type: ignore[arg-type]
    with claude.messages.stream(model="smollm2", max_tokens=2, messages=messages) as stream:  # type: ignore[arg-type]
        start = next(event for event in stream if event.type == "message_start")
        final = stream.get_final_message()
    assert start.message.usage.input_tokens == counted
    assert final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0) == counted


# -- errors ----------------------------------------------------------------------------------

def test_missing_max_tokens_is_a_400_invalid_request_error(server: LiveServer) -> None:
    message = assert_anthropic_error(
        post(server, "/v1/messages", {"model": "smollm2", "messages": [HI]}),
        400, "invalid_request_error")
    assert message == "max_tokens: Field required"


def test_unknown_model_is_a_404_not_found_error(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as raised:
        claude.messages.create(model="claude-opus-9", max_tokens=4, messages=[HI])  # type: ignore[list-item]
    error = raised.value.body["error"]  # type: ignore[index]
    assert error["type"] == "not_found_error" and "claude-opus-9" in error["message"]
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.count_tokens(model="claude-opus-9", messages=[HI])  # type: ignore[list-item]


@pytest.mark.parametrize("raw", [b"{", b"[]", b"\xff", b'"text"'])
def test_malformed_bodies_are_400s_in_anthropic_shape(server: LiveServer, raw: bytes) -> None:
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        response = httpx.post(f"{server.base_url}{path}", content=raw,
                              headers={"Content-Type": "application/json"})
        assert_anthropic_error(response, 400, "invalid_request_error")


@pytest.mark.parametrize("body, where", [
    ({"temperature": 1.5}, "temperature"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/bmp", "data": "AAAA"}}]}]},
     "messages.0.content.0.source.media_type"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
    ({"tool_choice": {"type": "tool", "name": "nope"}, "tools": [WEATHER]}, "tool_choice"),
    ({"messages": [HI, {"role": "assistant", "content": "Hello"}]}, "prefill"),
])
def test_invalid_fields_are_400s_naming_the_field(
    server: LiveServer, body: dict, where: str
) -> None:
    request = {"model": "smollm2", "max_tokens": 4, "messages": [HI], **body}
    message = assert_anthropic_error(post(server, "/v1/messages", request), 400,
                                     "invalid_request_error")
    assert where in message


def test_body_over_the_limit_is_a_413_request_too_large(server: LiveServer) -> None:
    big = {"model": "smollm2", "max_tokens": 4,
           "messages": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]}
    assert_anthropic_error(post(server, "/v1/messages", big), 413, "request_too_large")


def test_routes_answer_with_a_trailing_slash(server: LiveServer) -> None:
    response = post(server, "/v1/messages/count_tokens/", {"model": "smollm2",
                                                           "messages": [HI]})
    assert response.status_code == 200 and response.json()["input_tokens"] > 0


# -- API keys --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(["smollm2", "--ctx", "512", "--api-key", "sekrit"],
                        Path(tmp_path_factory.mktemp("guarded-messages")))
    yield live
    live.stop()


def test_x_api_key_is_accepted(guarded: LiveServer) -> None:
    message = sdk(guarded, api_key="sekrit").messages.create(
        model="smollm2", max_tokens=2, messages=[HI])  # type: ignore[list-item]
    assert message.type == "message"
    bearer = anthropic.Anthropic(base_url=guarded.base_url, auth_token="sekrit", max_retries=0)
    assert bearer.messages.count_tokens(model="smollm2", messages=[HI]).input_tokens > 0  # type: ignore[list-item]


def test_wrong_key_is_a_401_authentication_error(guarded: LiveServer) -> None:
    with pytest.raises(anthropic.AuthenticationError) as raised:
        sdk(guarded, api_key="wrong").messages.create(model="smollm2", max_tokens=2,
                                                      messages=[HI])  # type: ignore[list-item]
    assert raised.value.status_code == 401
    assert raised.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert_anthropic_error(post(guarded, "/v1/messages", {}), 401, "authentication_error")
