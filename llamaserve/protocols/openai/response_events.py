"""One response as it is generated: ChoiceDeltas → the Responses API's typed events.

The stream sends these events as they come; a request without `stream` runs the same events
and answers with the response of the last one, so the two cannot drift apart. The events, in
order (`openai.types.responses.Response*Event`): response.created, response.in_progress; per
output item output_item.added, then for a message content_part.added, output_text.delta…,
output_text.done, content_part.done, or for a tool call function_call_arguments.delta…,
function_call_arguments.done; output_item.done; and last response.completed,
response.incomplete (max_output_tokens) or, after an `error` event, response.failed.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ...core.choices import ChoiceDelta
from ...core.run import usage_of
from ...core.tool_calls import ParsedToolCall
from ...engine import Finished
from ...engine.types import TokenLogprob
from ...errors import RequestError, is_known, request_error
from .chat import argument_fragments
from .responses_schemas import (
    FunctionCall,
    IncompleteDetails,
    InputTokensDetails,
    OutputMessage,
    OutputText,
    ResponseError,
    ResponseObject,
    ResponseUsage,
)

logger = logging.getLogger(__name__)

Event = dict[str, Any]


def new_item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _failure_code(error: RequestError) -> str:
    """A code of the SDK's ResponseError for an error after the response started."""
    if error.status == 429:
        return "rate_limit_exceeded"
    if error.status < 500 and error.code in ("invalid_image", "image_too_large"):
        return error.code
    return "server_error" if error.status >= 500 else "invalid_prompt"


def _logprobs(entries: list[TokenLogprob], delta: bool) -> list[dict[str, Any]]:
    """Logprobs as output_text parts carry them, or (delta) as text delta events do."""
    result = []
    for entry in entries:
        logprob = entry.logprob if entry.logprob is not None else 0.0
        top = [{"token": text, "logprob": value} if delta else
               {"token": text, "bytes": list(raw), "logprob": value}
               for text, raw, value in entry.top]
        item: dict[str, Any] = {"token": entry.token, "logprob": logprob, "top_logprobs": top}
        if not delta:
            item["bytes"] = list(entry.bytes)
        result.append(item)
    return result


class ResponseRun:
    """The output items of one response and the events that tell them, numbered.

    `save(response)`, when given, runs before the last event is sent, so a client that reads
    `response.completed` can use its id as previous_response_id at once. `parallel_tool_calls`
    False keeps the first tool call of a reply; `logprobs` fills output_text's logprobs.
    """

    def __init__(self, response: ResponseObject, *, parallel_tool_calls: bool = True,
                 logprobs: bool = False,
                 save: Callable[[ResponseObject], Awaitable[None]] | None = None) -> None:
        self.response = response
        self.parallel_tool_calls = parallel_tool_calls
        self.logprobs = logprobs  # else logprobs stay [] (OpenAI's answer without include)
        self.save = save
        self.sequence = 0
        self.message: OutputMessage | None = None
        self.held_logprobs: list[TokenLogprob] = []  # come before the text they belong to

    def event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def snapshot(self) -> dict[str, Any]:
        return self.response.model_dump(mode="json")

    async def events(self, deltas: AsyncIterator[ChoiceDelta], in_band_errors: bool
                     ) -> AsyncIterator[Event]:
        """Every event of the response. `in_band_errors`: an error after the start becomes an
        `error` and a `response.failed` event (streams); else it is raised (one answer)."""
        yield self.event("response.created", response=self.snapshot())
        yield self.event("response.in_progress", response=self.snapshot())
        finished: list[Finished] = []
        reason = "stop"
        try:
            async for delta in deltas:
                if delta.logprobs and self.logprobs:
                    self.held_logprobs.extend(delta.logprobs)
                if delta.content:
                    for event in self._text(delta.content):
                        yield event
                for call in delta.tool_calls or []:
                    for event in self._tool_call(call):
                        yield event
                if delta.finished is not None:
                    finished.append(delta.finished)
                    reason = delta.finish_reason or "stop"
        except Exception as exc:
            if not in_band_errors:
                raise
            for event in await self._failed(exc):
                yield event
            return
        finally:
            close = getattr(deltas, "aclose", None)
            if close is not None:
                await close()
        for event in self._finish(reason, finished):
            yield event
        if self.save is not None:
            await self.save(self.response)
        kind = "response.completed" if self.response.status == "completed" else \
            "response.incomplete"
        yield self.event(kind, response=self.snapshot())

    # -- output items ------------------------------------------------------------------------

    def _text(self, text: str) -> list[Event]:
        events = [] if self.message is not None else self._open_message()
        assert self.message is not None
        index = len(self.response.output) - 1
        part = self.message.content[0]
        part.text += text
        logprobs, self.held_logprobs = self.held_logprobs, []
        if part.logprobs is not None and logprobs:
            part.logprobs.extend(_logprobs(logprobs, delta=False))
        events.append(self.event("response.output_text.delta", item_id=self.message.id,
                                 output_index=index, content_index=0, delta=text,
                                 logprobs=_logprobs(logprobs, delta=True)))
        return events

    def _open_message(self) -> list[Event]:
        self.message = OutputMessage(id=new_item_id("msg"), content=[], status="in_progress")
        self.response.output.append(self.message)
        index = len(self.response.output) - 1
        part = OutputText(text="", annotations=[], logprobs=[])
        added = self.event("response.output_item.added", output_index=index,
                           item=self.message.model_dump(mode="json"))
        self.message.content.append(part)
        return [added, self.event("response.content_part.added", item_id=self.message.id,
                                  output_index=index, content_index=0,
                                  part=part.model_dump(mode="json"))]

    def _close_message(self, status: str) -> list[Event]:
        message, self.message = self.message, None
        if message is None:
            return []
        index = self.response.output.index(message)
        part = message.content[0]
        message.status = status  # type: ignore[assignment]
        common = {"item_id": message.id, "output_index": index, "content_index": 0}
        return [
            self.event("response.output_text.done", **common, text=part.text,
                       logprobs=part.logprobs or []),
            self.event("response.content_part.done", **common,
                       part=part.model_dump(mode="json")),
            self.event("response.output_item.done", output_index=index,
                       item=message.model_dump(mode="json")),
        ]

    def _tool_call(self, call: ParsedToolCall) -> list[Event]:
        calls = [item for item in self.response.output if isinstance(item, FunctionCall)]
        if calls and not self.parallel_tool_calls:
            return []  # parallel_tool_calls: false allows one call per reply
        events = self._close_message("completed")
        item = FunctionCall(id=new_item_id("fc"), call_id=new_item_id("call"), name=call.name,
                            arguments="", status="in_progress")
        self.response.output.append(item)
        index = len(self.response.output) - 1
        events.append(self.event("response.output_item.added", output_index=index,
                                 item=item.model_dump(mode="json")))
        for fragment in argument_fragments(call.arguments):
            events.append(self.event("response.function_call_arguments.delta", item_id=item.id,
                                     output_index=index, delta=fragment))
        item.arguments, item.status = call.arguments, "completed"
        events.append(self.event("response.function_call_arguments.done", item_id=item.id,
                                 output_index=index, name=call.name, arguments=call.arguments))
        events.append(self.event("response.output_item.done", output_index=index,
                                 item=item.model_dump(mode="json")))
        return events

    # -- the end -----------------------------------------------------------------------------

    def _finish(self, reason: str, finished: list[Finished]) -> list[Event]:
        truncated = reason == "length"
        events = []
        if not self.response.output:  # the model said nothing: still one (empty) message
            events += self._open_message()
        events += self._close_message("incomplete" if truncated else "completed")
        usage = usage_of(finished)
        response = self.response
        response.usage = ResponseUsage(
            input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=usage.cached_tokens))
        if truncated:
            response.status = "incomplete"
            response.incomplete_details = IncompleteDetails(reason="max_output_tokens")
        else:
            response.status = "completed"
            response.completed_at = int(time.time())
        return events

    async def _failed(self, exc: Exception) -> list[Event]:
        if is_known(exc):
            error = request_error(exc)
        else:  # a bug: logged, and the client still gets a terminal event
            logger.exception("response %s failed", self.response.id)
            error = RequestError(500, "The server had an error while processing your "
                                 "request.", code="server_error")
        events = self._close_message("incomplete")
        events.append(self.event("error", code=error.code, message=error.message,
                                 param=error.param))
        self.response.status = "failed"
        self.response.error = ResponseError(code=_failure_code(error), message=error.message)
        if self.save is not None:
            await self.save(self.response)
        events.append(self.event("response.failed", response=self.snapshot()))
        return events
