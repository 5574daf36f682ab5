"""Reading tool calls out of model text (pure logic)."""

from __future__ import annotations

import json

import pytest

from llamaserve.core.tool_calls import may_be_tool_call, parse_tool_calls

KNOWN = {"get_weather", "get_time"}


def test_hermes_block_is_a_tool_call() -> None:
    reply = parse_tool_calls('<tool_call>\n{"name": "get_weather", "arguments": {"city": '
                             '"Paris"}}\n</tool_call>', KNOWN)
    assert reply.content is None
    assert [(c.name, json.loads(c.arguments)) for c in reply.tool_calls] == \
        [("get_weather", {"city": "Paris"})]


def test_several_hermes_blocks_and_surrounding_text() -> None:
    text = ('Let me check.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}'
            '</tool_call>\n<tool_call>{"name": "get_time", "arguments": {}}</tool_call>')
    reply = parse_tool_calls(text, KNOWN)
    assert reply.content == "Let me check."
    assert [c.name for c in reply.tool_calls] == ["get_weather", "get_time"]


def test_hermes_block_holding_a_list_and_unclosed_tag() -> None:
    reply = parse_tool_calls('<tool_call>[{"name": "get_time", "arguments": {"tz": "UTC"}}]',
                             KNOWN)
    assert [c.name for c in reply.tool_calls] == ["get_time"]


def test_llama31_json_form() -> None:
    reply = parse_tool_calls('<|python_tag|>{"name": "get_weather", "parameters": '
                             '{"city": "Rome"}}', KNOWN)
    assert json.loads(reply.tool_calls[0].arguments) == {"city": "Rome"}


@pytest.mark.parametrize("text", [
    "The weather is nice.",
    '<tool_call>{"name": "launch_rockets", "arguments": {}}</tool_call>',  # unknown function
    '<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>',  # broken JSON
    '{"name": "get_weather"',
    '{"city": "Paris"}',  # JSON, but not a call
])
def test_anything_else_is_content(text: str) -> None:
    reply = parse_tool_calls(text, KNOWN)
    assert reply.tool_calls == [] and reply.content == text


@pytest.mark.parametrize(("prefix", "expected"), [
    ("", True), ("  ", True), ("<tool", True), ("<tool_call>{", True), ("{", True),
    ("<|python", True), ("The", False), ("<b>", False),
])
def test_may_be_tool_call(prefix: str, expected: bool) -> None:
    assert may_be_tool_call(prefix) is expected
