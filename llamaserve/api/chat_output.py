"""Shaping one chat choice from engine events: content, tool calls, logprobs, finish reason.

The same `ChoiceDelta` stream feeds both the SSE chunks and the folded non-stream answer, so
the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from ..engine import Event, Finished, TextDelta
from ..engine.tools import ParsedToolCall, may_be_tool_call, parse_tool_calls
from ..engine.types import TokenLogprob
from .schemas import ChoiceLogprobs, TopLogprob
from .schemas import TokenLogprob as WireLogprob

# none: plain text. auto: the model may answer with a tool call, parsed from its text.
# forced: the grammar makes the whole reply one {"name", "arguments"} object.
ToolMode = Literal["none", "auto", "forced"]


@dataclass
class ChoiceDelta:
    index: int
    content: str | None = None
    logprobs: list[TokenLogprob] | None = None
    tool_calls: list[ParsedToolCall] | None = None
    finish_reason: str | None = None
    finished: Finished | None = None


async def shape_choice(
    events: AsyncIterator[Event],
    index: int,
    mode: ToolMode,
    tool_names: set[str],
    legacy_functions: bool = False,
) -> AsyncIterator[ChoiceDelta]:
    """Engine events of one choice → ChoiceDeltas. In auto mode, text that may be the start
    of a tool call is held back until it is clearly content or the reply ends."""
    held: list[str] = []
    holding = mode != "none"
    async for event in events:
        if isinstance(event, TextDelta):
            if holding:
                held.append(event.text)
                if event.logprobs:
                    yield ChoiceDelta(index, logprobs=event.logprobs)
                if mode == "auto" and not may_be_tool_call("".join(held)):
                    holding = False
                    yield ChoiceDelta(index, content="".join(held))
                    held.clear()
            elif event.text or event.logprobs:
                yield ChoiceDelta(index, content=event.text, logprobs=event.logprobs)
            continue
        finish: str = event.reason
        if holding:
            text = "".join(held)
            parsed = parse_tool_calls(text, tool_names)
            if parsed.tool_calls:
                if parsed.content:
                    yield ChoiceDelta(index, content=parsed.content)
                yield ChoiceDelta(index, tool_calls=parsed.tool_calls)
                finish = "function_call" if legacy_functions else "tool_calls"
            elif text:
                yield ChoiceDelta(index, content=text)
        yield ChoiceDelta(index, finish_reason=finish, finished=event)


def wire_logprobs(entries: list[TokenLogprob]) -> ChoiceLogprobs:
    return ChoiceLogprobs(
        content=[
            WireLogprob(
                token=entry.token,
                logprob=entry.logprob if entry.logprob is not None else 0.0,
                bytes=list(entry.bytes),
                top_logprobs=[
                    TopLogprob(token=text, logprob=logprob, bytes=list(raw))
                    for text, raw, logprob in entry.top
                ],
            )
            for entry in entries
        ],
        refusal=None,
    )


def argument_fragments(arguments: str, size: int = 16) -> list[str]:
    """A tool call's arguments cut into pieces, as OpenAI streams them."""
    return [arguments[i : i + size] for i in range(0, len(arguments), size)] or [""]
