"""Anthropic's Messages API, the pure parts: body → core ChatRequest, stop reasons, error
shapes. No model: the behaviour with one is in test_messages.py."""

from __future__ import annotations

import json

import pytest

from llamaserve.core.requests import Image
from llamaserve.engine import EngineBusyError, Finished
from llamaserve.errors import RequestError
from llamaserve.protocols.anthropic.errors import error_body, error_response, field_path
from llamaserve.protocols.anthropic.messages import chat_request
from llamaserve.protocols.anthropic.reply import stop_of
from llamaserve.protocols.anthropic.schemas import CountTokensRequest, MessagesRequest

TOOL = {"name": "lookup", "description": "Look a word up.",
        "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}}}


def request(**fields: object) -> MessagesRequest:
    return MessagesRequest.model_validate({"model": "m", "max_tokens": 8, **fields})


def test_system_blocks_and_mid_conversation_system_messages() -> None:
    chat = chat_request(request(
        system=[{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}],
        messages=[{"role": "user", "content": "Hi"},
                  {"role": "system", "content": "Reminder."},
                  {"role": "user", "content": "Again"}]))
    assert [(m.role, m.content) for m in chat.messages] == [
        ("system", ["One.", "Two."]), ("user", ["Hi"]), ("system", ["Reminder."]),
        ("user", ["Again"])]


def test_tool_use_and_tool_result_become_tool_calls_and_tool_messages() -> None:
    chat = chat_request(request(tools=[TOOL], messages=[
        {"role": "user", "content": "Define cat."},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"word": "cat"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a small feline"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
             "content": [{"type": "text", "text": "timeout"}]},
            {"type": "text", "text": "Thanks."}]}]))
    user, assistant, first, second, after = chat.messages
    assert assistant.content == ["Looking."]  # the thinking block is dropped
    [call] = assistant.tool_calls
    assert (call.id, call.name, json.loads(call.arguments)) == ("toolu_1", "lookup",
                                                                {"word": "cat"})
    assert (first.role, first.tool_call_id, first.content) == ("tool", "toolu_1",
                                                               ["a small feline"])
    assert (second.tool_call_id, second.content) == ("toolu_2", ["Error:", "timeout"])
    assert (after.role, after.content) == ("user", ["Thanks."])
    assert chat.tools[0].parameters == TOOL["input_schema"]
    assert chat.tools[0].param == "tools.0.input_schema"


def test_image_sources_become_core_images_naming_their_block() -> None:
    chat = chat_request(request(messages=[{"role": "user", "content": [
        {"type": "text", "text": "Compare"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/b.png"}}]}]}]))
    user, tool = chat.messages
    assert user.content[1:] == [Image("data:image/png;base64,QUJD", "messages.0.content.1"),
                                Image("https://example.com/a.jpg", "messages.0.content.2")]
    assert tool.content == [Image("https://example.com/b.png", "messages.0.content.3.content.0")]


@pytest.mark.parametrize("choice, mode, name", [
    ({"type": "auto"}, "auto", None), ({"type": "any"}, "required", None),
    ({"type": "tool", "name": "lookup"}, "named", "lookup"), ({"type": "none"}, "none", None),
])
def test_tool_choice(choice: dict, mode: str, name: str | None) -> None:
    chat = chat_request(request(messages=[{"role": "user", "content": "x"}], tools=[TOOL],
                                tool_choice=choice))
    assert chat.tool_choice is not None
    assert (chat.tool_choice.mode, chat.tool_choice.name) == (mode, name)


def test_auto_tool_choice_without_tools_is_no_tool_choice() -> None:
    chat = chat_request(request(messages=[{"role": "user", "content": "x"}],
                                tool_choice={"type": "auto"}))
    assert chat.tool_choice is None


def test_sampling_stop_sequences_and_output_format() -> None:
    chat = chat_request(request(
        messages=[{"role": "user", "content": "x"}], temperature=0.2, top_p=0.5, top_k=7,
        stop_sequences=["END"],
        output_config={"effort": "low", "format": {"type": "json_schema",
                                                   "schema": {"type": "object"}}}))
    assert (chat.sampling.temperature, chat.sampling.top_p, chat.sampling.top_k) == (0.2, 0.5, 7)
    assert chat.stop == ["END"] and chat.max_tokens == 8 and chat.fit_context
    assert chat.response_format is not None
    assert chat.response_format.schema == {"type": "object"}


def test_count_tokens_request_translates_without_generation_fields() -> None:
    body = CountTokensRequest.model_validate({"model": "m", "messages": [
        {"role": "user", "content": "x"}, {"role": "assistant", "content": "partial"}]})
    chat = chat_request(body)  # a trailing assistant turn is counted, not refused
    assert chat.max_tokens is None and chat.stop == [] and len(chat.messages) == 2


def test_prefill_is_refused() -> None:
    with pytest.raises(RequestError) as raised:
        chat_request(request(messages=[{"role": "user", "content": "x"},
                                       {"role": "assistant", "content": "The answer is"}]))
    assert raised.value.status == 400 and "prefill" in raised.value.message


def finished(completion: int, stop: str | None = None) -> Finished:
    reason = "length" if stop is None and completion else "stop"
    return Finished(reason, 10, completion, stop_sequence=stop)  # type: ignore[arg-type]


@pytest.mark.parametrize("finish, event, expected", [
    ("stop", finished(3), ("end_turn", None)),
    ("stop", finished(3, "END"), ("stop_sequence", "END")),
    ("length", finished(8), ("max_tokens", None)),
    ("length", finished(5), ("model_context_window_exceeded", None)),
    ("tool_calls", finished(5), ("tool_use", None)),
])
def test_stop_reasons(finish: str, event: Finished, expected: tuple) -> None:
    assert stop_of(finish, event, max_tokens=8) == expected


@pytest.mark.parametrize("status, wire, error_type", [
    (400, 400, "invalid_request_error"), (401, 401, "authentication_error"),
    (403, 403, "permission_error"), (404, 404, "not_found_error"),
    (413, 413, "request_too_large"), (429, 429, "rate_limit_error"), (500, 500, "api_error"),
    (503, 529, "overloaded_error"),
])
def test_error_types_and_statuses(status: int, wire: int, error_type: str) -> None:
    assert error_body(status, "m") == {"type": "error",
                                       "error": {"type": error_type, "message": "m"}}
    assert error_response(RequestError(status, "m")).status_code == wire


def test_busy_engine_is_529_overloaded_with_retry_after() -> None:
    response = error_response(EngineBusyError("busy", retry_after=2))
    assert response.status_code == 529 and response.headers["Retry-After"] == "2"
    assert json.loads(response.body)["error"]["type"] == "overloaded_error"


def test_field_paths_are_anthropic_spelled() -> None:
    loc = ("messages", 0, "user", "content", "list[tagged-union[TextBlock,ImageBlock]]", 1,
           "image", "source", "base64", "media_type")
    assert field_path(loc) == "messages.0.content.1.source.media_type"
    assert field_path(("messages", 0, "user", "content", 0, "text", "text")) == \
        "messages.0.content.0.text"
    assert field_path(("tool_choice", "tool", "name")) == "tool_choice.name"
