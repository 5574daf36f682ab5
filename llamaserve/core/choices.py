"""One choice of a chat completion, from engine events to `ChoiceDelta`s: content, tool calls
(parsed out of the model's text), logprobs and the finish reason.

Every protocol consumes the same stream of ChoiceDeltas and either frames it (streaming) or
folds it (one answer), so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..engine import Event, Finished, TextDelta
from ..engine.types import TokenLogprob
from .plan import ToolMode
from .tool_calls import ParsedToolCall, may_be_tool_call, parse_tool_calls

# "stop": the model ended (or a stop string); "length": max_tokens or the context;
# "tool_calls": the reply is one or more tool calls.
FinishReason = str


@dataclass
class ChoiceDelta:
    index: int
    content: str | None = None
    logprobs: list[TokenLogprob] | None = None
    tool_calls: list[ParsedToolCall] | None = None
    finish_reason: FinishReason | None = None
    finished: Finished | None = None  # with the finish reason: the choice's token counts


async def shape_choice(
    events: AsyncIterator[Event], index: int, mode: ToolMode, tool_names: set[str],
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
                finish = "tool_calls"
            elif text:
                yield ChoiceDelta(index, content=text)
        yield ChoiceDelta(index, finish_reason=finish, finished=event)
