"""The answer of /v1/messages: ChoiceDeltas folded into one `message`, and what the folded
answer and the event stream (stream.py) share: stop reasons, usage, tool_use blocks."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ...core.choices import ChoiceDelta
from ...core.run import usage_of
from ...core.tool_calls import ParsedToolCall
from ...engine import Finished
from .schemas import Message, StopReason, TextContent, ToolUseContent, Usage


@dataclass(frozen=True)
class Reply:
    """What the answer to one request needs to know of it."""

    model: str
    max_tokens: int
    single_tool_use: bool = False  # tool_choice.disable_parallel_tool_use
    id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex[:24]}")


def stop_of(
    finish: str | None, finished: Finished | None, max_tokens: int
) -> tuple[StopReason, str | None]:
    """`stop_reason` and `stop_sequence` (the stop sequence that matched, else None)."""
    if finish == "tool_calls":
        return "tool_use", None
    if finish == "length":
        if finished is not None and finished.completion_tokens < max_tokens:
            return "model_context_window_exceeded", None  # the context filled up first
        return "max_tokens", None
    if finished is not None and finished.stop_sequence is not None:
        return "stop_sequence", finished.stop_sequence
    return "end_turn", None


def wire_usage(finished: list[Finished]) -> Usage:
    usage = usage_of(finished)
    return Usage(input_tokens=usage.prompt_tokens - usage.cached_tokens,
                 output_tokens=usage.completion_tokens,
                 cache_read_input_tokens=usage.cached_tokens)


def tool_use(call: ParsedToolCall) -> ToolUseContent:
    return ToolUseContent(id=f"toolu_{uuid.uuid4().hex[:24]}", name=call.name,
                          input=json.loads(call.arguments))


async def fold(deltas: AsyncIterator[ChoiceDelta], reply: Reply) -> Message:
    texts: list[str] = []
    calls: list[ParsedToolCall] = []
    finish: str | None = None
    finished: list[Finished] = []
    async for delta in deltas:
        if delta.content:
            texts.append(delta.content)
        calls.extend(delta.tool_calls or [])
        if delta.finished is not None:
            finish = delta.finish_reason
            finished.append(delta.finished)
    if reply.single_tool_use:
        calls = calls[:1]  # disable_parallel_tool_use: at most one tool_use
    content: list[TextContent | ToolUseContent] = []
    if "".join(texts):
        content.append(TextContent(text="".join(texts)))
    content.extend(tool_use(call) for call in calls)
    reason, sequence = stop_of(finish, finished[-1] if finished else None, reply.max_tokens)
    return Message(id=reply.id, model=reply.model, content=content, stop_reason=reason,
                       stop_sequence=sequence, usage=wire_usage(finished))
