"""Anthropic's event stream: ChoiceDeltas → `event:` + `data:` frames.

    message_start, ping,
    (content_block_start, content_block_delta*, content_block_stop)*   text, then tool_use
    message_delta (stop_reason, stop_sequence, usage), message_stop

An error after the 200 was sent becomes an `error` event, and the stream ends there.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel
from starlette.responses import StreamingResponse

from ...core.choices import ChoiceDelta
from ...engine import Finished
from .errors import in_band_error
from .reply import Reply, stop_of, tool_use, wire_usage
from .schemas import (
    ContentBlockDelta,
    ContentBlockStart,
    ContentBlockStop,
    InputJSONDelta,
    Message,
    MessageDelta,
    MessageStart,
    MessageStop,
    Ping,
    StopDelta,
    StreamEvent,
    TextContent,
    TextDelta,
    Usage,
)

JSON_PIECE = 32  # characters of a tool's input per input_json_delta


def event_stream(
    deltas: AsyncIterator[ChoiceDelta], reply: Reply, prompt_tokens: int
) -> StreamingResponse:
    async def frames() -> AsyncIterator[bytes]:
        try:
            async for event in events(deltas, reply, prompt_tokens):
                if isinstance(event, BaseModel):
                    yield frame(event.type, event.model_dump_json())  # type: ignore[attr-defined]
                else:
                    yield frame("error", json.dumps(event))
        finally:
            await deltas.aclose()  # type: ignore[attr-defined]

    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def frame(event: str, data: str) -> bytes:
    return f"event: {event}\ndata: {data}\n\n".encode()


async def events(
    deltas: AsyncIterator[ChoiceDelta], reply: Reply, prompt_tokens: int
) -> AsyncIterator[StreamEvent | dict[str, Any]]:
    yield MessageStart(message=Message(
        id=reply.id, model=reply.model, content=[], stop_reason=None, stop_sequence=None,
        usage=Usage(input_tokens=prompt_tokens, output_tokens=0)))
    yield Ping()
    index = 0  # of the next content block
    text_open = False
    tools_used = 0
    try:
        async for delta in deltas:
            if delta.content:
                if not text_open:
                    yield ContentBlockStart(index=index, content_block=TextContent(text=""))
                    text_open = True
                yield ContentBlockDelta(index=index, delta=TextDelta(text=delta.content))
            for call in delta.tool_calls or []:
                if text_open:
                    yield ContentBlockStop(index=index)
                    index, text_open = index + 1, False
                if reply.single_tool_use and tools_used:
                    continue  # disable_parallel_tool_use: at most one tool_use
                block = tool_use(call)
                tools_used += 1
                yield ContentBlockStart(index=index, content_block=block.model_copy(
                    update={"input": {}}))
                arguments = json.dumps(block.input, ensure_ascii=False)
                for start in range(0, len(arguments), JSON_PIECE):
                    piece = InputJSONDelta(partial_json=arguments[start:start + JSON_PIECE])
                    yield ContentBlockDelta(index=index, delta=piece)
                yield ContentBlockStop(index=index)
                index += 1
            if delta.finished is not None:
                if text_open:
                    yield ContentBlockStop(index=index)
                for event in _ending(delta.finish_reason, delta.finished, reply):
                    yield event
                return
    except Exception as exc:  # after the 200: reported in the stream
        yield in_band_error(exc)


def _ending(finish: str | None, finished: Finished, reply: Reply) -> list[StreamEvent]:
    reason, sequence = stop_of(finish, finished, reply.max_tokens)
    return [MessageDelta(delta=StopDelta(stop_reason=reason, stop_sequence=sequence),
                         usage=wire_usage([finished])),
            MessageStop()]
