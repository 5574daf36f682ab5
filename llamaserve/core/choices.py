"""One choice of a chat completion, from engine events to `ChoiceDelta`s: reasoning and content
(split by core/reasoning.py), tool calls (parsed out of the model's text), logprobs and the
finish reason.

Every protocol consumes the same stream of ChoiceDeltas and either frames it (streaming) or
folds it (one answer), so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..engine import Event, Finished, TextDelta
from ..engine.types import TokenLogprob
from .plan import ToolMode
from .reasoning import Part, ReasoningFormat, ReasoningParser
from .tool_calls import ParsedToolCall, may_be_tool_call, parse_tool_calls

# "stop": the model ended (or a stop string); "length": max_tokens or the context;
# "tool_calls": the reply is one or more tool calls.
FinishReason = str


@dataclass
class ChoiceDelta:
    index: int
    content: str | None = None
    reasoning: str | None = None  # the model's thinking, split out of its reply
    logprobs: list[TokenLogprob] | None = None
    tool_calls: list[ParsedToolCall] | None = None
    finish_reason: FinishReason | None = None
    finished: Finished | None = None  # with the finish reason: the choice's token counts


async def shape_choice(
    events: AsyncIterator[Event], index: int, mode: ToolMode, tool_names: set[str],
    reasoning: ReasoningFormat | None = None,
) -> AsyncIterator[ChoiceDelta]:
    """Engine events of one choice → ChoiceDeltas. With a reasoning format, a reasoning block
    that opens the reply comes as `reasoning`, the rest as the reply. In auto mode, reply
    text that may be the start of a tool call is held back until it is clearly content or the
    reply ends."""
    parser = ReasoningParser(reasoning) if reasoning is not None else None
    reply = _Reply(index, mode, tool_names)
    async for event in events:
        if isinstance(event, TextDelta):
            parts = parser.feed(event.text) if parser else [("content", event.text)]
            deltas = _parts(index, parts, reply)
            if event.logprobs:  # with the first delta of the event's text, else alone
                if deltas:
                    deltas[0].logprobs = event.logprobs
                else:
                    deltas = [ChoiceDelta(index, logprobs=event.logprobs)]
            for delta in deltas:
                yield delta
            continue
        for delta in _parts(index, parser.finish() if parser else [], reply):
            yield delta
        for delta in reply.finish(event):
            yield delta


def _parts(index: int, parts: list[Part], reply: _Reply) -> list[ChoiceDelta]:
    deltas = []
    for kind, text in parts:
        if kind == "reasoning":
            deltas.append(ChoiceDelta(index, reasoning=text))
        else:
            deltas += reply.feed(text)
    return deltas


class _Reply:
    """The reply after any reasoning: content, or tool calls parsed out of it."""

    def __init__(self, index: int, mode: ToolMode, tool_names: set[str]) -> None:
        self.index, self.mode, self.tool_names = index, mode, tool_names
        self.held: list[str] = []
        self.holding = mode != "none"

    def feed(self, text: str) -> list[ChoiceDelta]:
        if not self.holding:
            return [ChoiceDelta(self.index, content=text)] if text else []
        self.held.append(text)
        if self.mode == "auto" and not may_be_tool_call("".join(self.held)):
            self.holding = False
            text, self.held = "".join(self.held), []
            return [ChoiceDelta(self.index, content=text)]
        return []

    def finish(self, event: Finished) -> list[ChoiceDelta]:
        finish: str = event.reason
        deltas = []
        if self.holding:
            text = "".join(self.held)
            parsed = parse_tool_calls(text, self.tool_names)
            if parsed.tool_calls:
                if parsed.content:
                    deltas.append(ChoiceDelta(self.index, content=parsed.content))
                deltas.append(ChoiceDelta(self.index, tool_calls=parsed.tool_calls))
                finish = "tool_calls"
            elif text:
                deltas.append(ChoiceDelta(self.index, content=text))
        deltas.append(ChoiceDelta(self.index, finish_reason=finish, finished=event))
        return deltas
