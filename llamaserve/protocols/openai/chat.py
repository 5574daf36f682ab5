"""POST /v1/chat/completions: the OpenAI chat body → a core ChatRequest, and ChoiceDeltas →
chunks (stream) or one chat.completion (folded)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...core.choices import ChoiceDelta
from ...core.requests import (
    ChatRequest,
    Image,
    Message,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
)
from ...core.run import start_chat, usage_of
from ...core.tool_calls import ParsedToolCall
from ...engine import Finished
from ...errors import RequestError, is_known
from .errors import in_band_error
from .http import (
    SYSTEM_FINGERPRINT,
    keep_alive_of,
    new_id,
    now,
    parse_request,
    runtime,
    sampling_of,
    sse_response,
    stop_list,
    wire_usage,
)
from .schemas import (
    AssistantReply,
    CalledFunction,
    CalledTool,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChoiceLogprobs,
    FunctionDelta,
    ImagePart,
    ToolCallDelta,
    TopLogprob,
)
from .schemas import TokenLogprob as WireLogprob
from .schemas import Usage as WireUsage

logger = logging.getLogger(__name__)


async def create_chat_completion(request: Request) -> Response:
    body = await parse_request(request, ChatCompletionRequest)
    if body.user:
        logger.info("chat completion for user %r on model %r", body.user, body.model)
    legacy = bool(body.functions) and not body.tools  # answer with message.function_call
    _, deltas = await start_chat(chat_request(body, keep_alive_of(request)), runtime(request))
    completion_id, created = new_id("chatcmpl"), now()
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse_response(_chunks(deltas, completion_id, created, body.model, include_usage,
                                    legacy))
    return JSONResponse(await _fold(deltas, completion_id, created, body.model, body.n or 1,
                                    legacy))


# -- the request -----------------------------------------------------------------------------

def chat_request(body: ChatCompletionRequest, keep_alive: float | None) -> ChatRequest:
    if body.top_logprobs is not None and not body.logprobs:
        raise RequestError(400, "'top_logprobs' needs 'logprobs' set to true.",
                           param="top_logprobs", code="invalid_value")
    tools, choice = _tools(body)
    response_format = None
    if body.response_format is not None:
        spec = body.response_format.json_schema
        response_format = ResponseFormat(body.response_format.type,
                                         spec.schema_ if spec is not None else None,
                                         "response_format.json_schema"
                                         if body.response_format.type == "json_schema"
                                         else "response_format")
    return ChatRequest(
        model=body.model,
        sampling=sampling_of(body),
        max_tokens=body.max_completion_tokens or body.max_tokens,
        stop=stop_list(body.stop),
        n=body.n or 1,
        grammar=body.grammar,
        cache_prompt=body.cache_prompt is not False,
        keep_alive=keep_alive,
        messages=[_message(i, message) for i, message in enumerate(body.messages)],
        tools=tools,
        tool_choice=choice,
        response_format=response_format,
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        thinking=False if body.reasoning_effort == "none" else None,
        separate_reasoning=True,  # as message/delta.reasoning_content (and reasoning)
    )


def _message(i: int, message: Any) -> Message:
    content: list[str | Image] = []
    if isinstance(message.content, str):
        content.append(message.content)
    elif isinstance(message.content, list):
        for j, part in enumerate(message.content):
            if isinstance(part, ImagePart):
                url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
                content.append(Image(url, f"messages[{i}].content[{j}]"))
            else:
                content.append(part.text if part.type == "text" else part.refusal)
    role = "system" if message.role == "developer" else message.role
    result = Message(role=role, content=content, name=getattr(message, "name", None))
    if message.role == "assistant":
        result.reasoning = message.reasoning_content or message.reasoning
        if message.function_call:
            result.function_call = message.function_call.model_dump()
        result.tool_calls = [ToolCall(call.id, call.function.name, call.function.arguments)
                             for call in message.tool_calls or []]
    if message.role == "tool":
        result.tool_call_id = message.tool_call_id
    return result


def _tools(body: ChatCompletionRequest) -> tuple[list[Tool], ToolChoice | None]:
    """`tools` + `tool_choice`, or the legacy `functions` + `function_call`."""
    if body.tools or not body.functions:
        tools = [Tool(t.function.name, t.function.description, t.function.parameters,
                      f"tools[{i}].function.parameters") for i, t in enumerate(body.tools or [])]
        requested, param = body.tool_choice, "tool_choice"
        named = None if isinstance(requested, str | None) else requested.function.name
    else:
        tools = [Tool(f.name, f.description, f.parameters, f"functions[{i}].parameters")
                 for i, f in enumerate(body.functions)]
        requested, param = body.function_call, "function_call"
        named = None if isinstance(requested, str | None) else requested.name
    if requested is None:
        return tools, None
    mode = requested if isinstance(requested, str) else "named"
    return tools, ToolChoice(mode, named, param)  # type: ignore[arg-type]


# -- the answer ------------------------------------------------------------------------------

def wire_logprobs(entries: list[Any]) -> ChoiceLogprobs:
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


def _finish_reason(reason: str | None, legacy: bool) -> str | None:
    return "function_call" if legacy and reason == "tool_calls" else reason


def _called(calls: list[ParsedToolCall]) -> list[CalledTool]:
    return [
        CalledTool(id=f"call_{uuid.uuid4().hex[:24]}", type="function",
                   function=CalledFunction(name=call.name, arguments=call.arguments))
        for call in calls
    ]


async def _fold(
    deltas: AsyncIterator[ChoiceDelta], completion_id: str, created: int, model: str, n: int,
    legacy: bool,
) -> dict[str, Any]:
    texts: list[list[str]] = [[] for _ in range(n)]
    thoughts: list[list[str]] = [[] for _ in range(n)]
    logprobs: list[list[Any]] = [[] for _ in range(n)]
    calls: list[list[ParsedToolCall]] = [[] for _ in range(n)]
    finishes: list[str] = ["stop"] * n
    finished: list[Finished] = []
    async for delta in deltas:
        i = delta.index
        if delta.content:
            texts[i].append(delta.content)
        if delta.reasoning:
            thoughts[i].append(delta.reasoning)
        if delta.logprobs:
            logprobs[i].extend(delta.logprobs)
        if delta.tool_calls:
            calls[i].extend(delta.tool_calls)
        if delta.finished is not None:
            finishes[i] = _finish_reason(delta.finish_reason, legacy) or "stop"
            finished.append(delta.finished)
    choices = []
    for i in range(n):
        message = AssistantReply(role="assistant", refusal=None,
                                 content="".join(texts[i]) or (None if calls[i] else ""))
        if thoughts[i]:
            message.reasoning_content = message.reasoning = "".join(thoughts[i])
        if calls[i] and legacy:
            first = calls[i][0]
            message.function_call = CalledFunction(name=first.name, arguments=first.arguments)
        elif calls[i]:
            message.tool_calls = _called(calls[i])
        choice = ChatChoice(index=i, message=message, finish_reason=finishes[i],
                            logprobs=wire_logprobs(logprobs[i]) if logprobs[i] else None)
        choices.append(choice)
    completion = ChatCompletion(id=completion_id, object="chat.completion", created=created,
                                model=model, system_fingerprint=SYSTEM_FINGERPRINT,
                                choices=choices, usage=wire_usage(usage_of(finished)))
    # exclude_unset: tool_calls/function_call appear only when the model called something
    return completion.model_dump(exclude_unset=True)


async def _chunks(
    deltas: AsyncIterator[ChoiceDelta], completion_id: str, created: int, model: str,
    include_usage: bool, legacy: bool,
) -> AsyncIterator[ChatCompletionChunk | dict[str, Any]]:
    def chunk(choice: ChatChunkChoice | None, usage: WireUsage | None = None
              ) -> ChatCompletionChunk:
        fields: dict[str, Any] = {
            "id": completion_id, "object": "chat.completion.chunk", "created": created,
            "model": model, "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [choice] if choice else [],
        }
        if include_usage:
            fields["usage"] = usage
        return ChatCompletionChunk(**fields)

    def choice(index: int, delta: ChatDelta, logprobs: Any = None,
               finish: str | None = None) -> ChatChunkChoice:
        return ChatChunkChoice(index=index, delta=delta, logprobs=logprobs, finish_reason=finish)

    started: set[int] = set()
    finished: list[Finished] = []
    try:
        async for delta in deltas:
            i = delta.index
            if i not in started:  # OpenAI's first chunk of a choice carries the role
                started.add(i)
                yield chunk(choice(i, ChatDelta(role="assistant", content="")))
            if delta.reasoning:
                logprobs = wire_logprobs(delta.logprobs) if delta.logprobs else None
                yield chunk(choice(i, ChatDelta(reasoning_content=delta.reasoning,
                                                reasoning=delta.reasoning), logprobs))
            elif delta.content or delta.logprobs:
                logprobs = wire_logprobs(delta.logprobs) if delta.logprobs else None
                yield chunk(choice(i, ChatDelta(content=delta.content or ""), logprobs))
            for k, call in enumerate(delta.tool_calls or []):
                for piece in _call_chunks(call, k, legacy):
                    yield chunk(choice(i, piece))
            if delta.finished is not None:
                finished.append(delta.finished)
                yield chunk(choice(i, ChatDelta(),
                                   finish=_finish_reason(delta.finish_reason, legacy)))
    except Exception as exc:
        if not is_known(exc):
            raise
        # A later choice failed after the 200 was sent: report it in the stream.
        yield in_band_error(exc)
        return
    if include_usage:
        yield chunk(None, wire_usage(usage_of(finished)))


def _call_chunks(call: ParsedToolCall, k: int, legacy: bool) -> list[ChatDelta]:
    """One tool call as stream deltas: the name and id first, the arguments in pieces."""
    called = _called([call])[0]
    pieces = []
    for j, fragment in enumerate(argument_fragments(call.arguments)):
        if legacy:
            function = FunctionDelta(name=call.name, arguments=fragment) if j == 0 \
                else FunctionDelta(arguments=fragment)
            pieces.append(ChatDelta(function_call=function))
            continue
        tool = ToolCallDelta(index=k, function=FunctionDelta(arguments=fragment))
        if j == 0:
            tool = ToolCallDelta(index=k, id=called.id, type="function",
                                 function=FunctionDelta(name=call.name, arguments=fragment))
        pieces.append(ChatDelta(tool_calls=[tool]))
    return pieces
