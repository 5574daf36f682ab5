"""Reading tool calls out of model text.

Two syntaxes are understood: the Hermes/Qwen form, `<tool_call>{"name": ..., "arguments": ...}
</tool_call>` (one block per call, text around them is content), and the Llama-3.1 JSON form,
the whole reply being `{"name": ..., "parameters": ...}` (optionally after `<|python_tag|>`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

HERMES_OPEN = "<tool_call>"
PYTHON_TAG = "<|python_tag|>"
_HERMES_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


@dataclass(frozen=True)
class ParsedToolCall:
    name: str
    arguments: str  # JSON text of an object


@dataclass(frozen=True)
class ParsedReply:
    content: str | None
    tool_calls: list[ParsedToolCall]


def _call_from(obj: Any, known: set[str]) -> ParsedToolCall | None:
    if not isinstance(obj, dict):
        return None
    if obj.get("type") == "function" and isinstance(obj.get("function"), dict):
        obj = obj["function"]
    name = obj.get("name")
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(name, str) or name not in known or not isinstance(arguments, dict):
        return None
    return ParsedToolCall(name, json.dumps(arguments, ensure_ascii=False))


def parse_tool_calls(text: str, known_names: set[str]) -> ParsedReply:
    """Tool calls in `text` for functions named in `known_names`; if none parse, the whole
    text is content."""
    stripped = text.strip()
    if HERMES_OPEN in stripped:
        calls = []
        for block in _HERMES_BLOCK.findall(stripped):
            try:
                found = json.loads(block)
            except json.JSONDecodeError:
                return ParsedReply(text, [])
            # some models (SmolLM2's training data) put a list of calls in one block
            for item in found if isinstance(found, list) else [found]:
                call = _call_from(item, known_names)
                if call is None:
                    return ParsedReply(text, [])
                calls.append(call)
        content = _HERMES_BLOCK.sub("", stripped).strip() or None
        return ParsedReply(content, calls) if calls else ParsedReply(text, [])
    body = stripped.removeprefix(PYTHON_TAG).strip()
    if body.startswith("{"):
        try:
            call = _call_from(json.loads(body), known_names)
        except json.JSONDecodeError:
            call = None
        if call is not None:
            return ParsedReply(None, [call])
    return ParsedReply(text, [])


def may_be_tool_call(prefix: str) -> bool:
    """Whether a reply beginning with `prefix` could still turn out to be a tool call (so a
    stream must hold it back rather than send it as content)."""
    start = prefix.lstrip()
    if not start:
        return True
    for marker in (HERMES_OPEN, PYTHON_TAG):
        if marker.startswith(start) or start.startswith(marker):
            return True
    return start.startswith("{")
