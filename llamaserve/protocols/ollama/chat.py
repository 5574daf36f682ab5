"""POST /api/chat: Ollama's chat body → a core ChatRequest, and ChoiceDeltas → NDJSON lines
(`stream`, Ollama's default) or one object."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...core.requests import ChatRequest, Image, Message, Tool, ToolCall
from ...core.run import start_chat
from ...core.tool_calls import ParsedToolCall
from .errors import ollama_errors
from .generation import (
    arguments_json,
    context_of,
    folded,
    format_of,
    image_of,
    load_or_unload,
    logprobs_of,
    max_tokens_of,
    sampling_of,
    stops_of,
    stream_lines,
    wire_tool_calls,
)
from .http import keep_alive_seconds, manager_of, ndjson_response, parse_body, runtime, timestamp
from .names import resolve
from .schemas import ChatBody, ChatMessage, Options


@ollama_errors
async def chat(request: Request) -> Response:
    started = time.monotonic()
    body = await parse_body(request, ChatBody)
    manager = manager_of(request)
    model = await resolve(manager, body.model)
    keep_alive = keep_alive_seconds(body.keep_alive)
    if not body.messages:
        reason = await load_or_unload(manager, model.spec.id, keep_alive)
        return JSONResponse({"model": body.model, "created_at": timestamp(),
                             **_message("", None), "done_reason": reason, "done": True})
    core = chat_request(body, model.spec.id, keep_alive)
    work = runtime(request)
    _, deltas = await start_chat(core, work)
    if body.stream is False:
        return JSONResponse(await folded(deltas, body.model, _message, started, work.state))
    return ndjson_response(stream_lines(deltas, body.model, _message, started, work.state))


def chat_request(body: ChatBody, model_id: str, keep_alive: float | None) -> ChatRequest:
    options = body.options or Options()
    return ChatRequest(
        model=model_id,
        sampling=sampling_of(options),
        max_tokens=max_tokens_of(options),
        stop=stops_of(options),
        keep_alive=keep_alive,
        context=context_of(options),
        messages=[_core_message(i, message) for i, message in enumerate(body.messages or [])],
        tools=[Tool(t.function.name, t.function.description, t.function.parameters,
                    f"tools[{i}].function.parameters") for i, t in enumerate(body.tools or [])],
        response_format=format_of(body.format),
        logprobs=logprobs_of(body.logprobs, body.top_logprobs),
    )


def _core_message(i: int, message: ChatMessage) -> Message:
    # Ollama puts a message's images before its text
    content: list[str | Image] = [image_of(data, f"messages[{i}].images[{j}]")
                                  for j, data in enumerate(message.images or [])]
    if message.content:
        content.append(message.content)
    result = Message(role=message.role, content=content)
    if message.role == "assistant":
        result.tool_calls = [
            ToolCall(call.id or f"call_{i}_{k}", call.function.name,
                     arguments_json(call.function.arguments,
                                    f"messages[{i}].tool_calls[{k}].function.arguments"))
            for k, call in enumerate(message.tool_calls or [])
        ]
    if message.role == "tool":
        result.name = message.tool_name
        result.tool_call_id = message.tool_call_id
    return result


def _message(text: str, calls: list[ParsedToolCall] | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = wire_tool_calls(calls)
    return {"message": message}
