"""POST /v1/chat/completions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..engine import Event, Finished, GenerationRequest, TextDelta
from ..manager import ResidentModel
from .errors import APIError
from .generation import (
    SYSTEM_FINGERPRINT,
    new_id,
    now,
    open_generation,
    parse_request,
    reject_unsupported,
    sampling_params,
    sse_response,
    stop_list,
)
from .schemas import (
    AssistantReply,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ImagePart,
    Usage,
)


def template_messages(body: ChatCompletionRequest, model: ResidentModel) -> list[dict[str, Any]]:
    """OpenAI messages → the plain dicts chat templates expect: `content` always a string.

    Templates such as SmolLM2's concatenate `content` as a string, so text parts are joined
    here, before any template sees them.
    """
    rendered: list[dict[str, Any]] = []
    for i, message in enumerate(body.messages):
        content = message.content
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if isinstance(part, ImagePart):
                    raise APIError(
                        400,
                        f"model '{model.spec.id}' does not accept images "
                        f"(messages[{i}].content[{j}] is an image).",
                        param=f"messages[{i}].content[{j}]",
                        code="image_not_supported",
                    )
                texts.append(part.text if part.type == "text" else part.refusal)
            content = "\n".join(texts)
        entry: dict[str, Any] = {
            "role": "system" if message.role == "developer" else message.role,
            "content": content or "",
        }
        if getattr(message, "name", None):
            entry["name"] = message.name
        if message.role == "assistant" and message.tool_calls:
            entry["tool_calls"] = [call.model_dump() for call in message.tool_calls]
        if message.role == "tool":
            entry["tool_call_id"] = message.tool_call_id
        rendered.append(entry)
    return rendered


def _unsupported(body: ChatCompletionRequest) -> dict[str, Any]:
    response_format = body.response_format
    return {
        "n": (body.n or 1) > 1,
        "logprobs": body.logprobs,
        "top_logprobs": body.top_logprobs,
        "logit_bias": body.logit_bias,
        "tools": body.tools,
        "functions": body.functions,
        "tool_choice": body.tool_choice not in (None, "none", "auto"),
        "function_call": body.function_call not in (None, "none", "auto"),
        "response_format": response_format is not None and response_format.type != "text",
    }


async def create_chat_completion(request: Request) -> Response:
    body = await parse_request(request, ChatCompletionRequest)
    reject_unsupported(_unsupported(body))

    def build(model: ResidentModel) -> GenerationRequest:
        return GenerationRequest(
            messages=template_messages(body, model),
            max_tokens=(
                body.max_completion_tokens or body.max_tokens or model.spec.defaults.max_tokens
            ),
            stop=stop_list(body.stop),
            sampling=sampling_params(body, model),
        )

    _, events = await open_generation(request.app.state.manager, body.model, build)
    completion_id, created = new_id("chatcmpl"), now()
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse_response(_chunks(events, completion_id, created, body.model, include_usage))

    parts: list[str] = []
    finished: Finished | None = None
    async for event in events:
        if isinstance(event, TextDelta):
            parts.append(event.text)
        else:
            finished = event
    assert finished is not None
    completion = ChatCompletion(
        id=completion_id,
        created=created,
        model=body.model,
        system_fingerprint=SYSTEM_FINGERPRINT,
        choices=[
            ChatChoice(
                index=0,
                message=AssistantReply(content="".join(parts)),
                finish_reason=finished.reason,
            )
        ],
        usage=_usage(finished),
    )
    return JSONResponse(completion.model_dump())


def _usage(finished: Finished) -> Usage:
    return Usage(
        prompt_tokens=finished.prompt_tokens,
        completion_tokens=finished.completion_tokens,
        total_tokens=finished.prompt_tokens + finished.completion_tokens,
    )


async def _chunks(
    events: AsyncIterator[Event], completion_id: str, created: int, model: str, include_usage: bool
) -> AsyncIterator[ChatCompletionChunk]:
    def chunk(choice: ChatChunkChoice | None, usage: Usage | None = None) -> ChatCompletionChunk:
        fields: dict[str, Any] = {
            "id": completion_id,
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [choice] if choice else [],
            "object": "chat.completion.chunk",
        }
        if include_usage:
            fields["usage"] = usage
        return ChatCompletionChunk(**fields)

    yield chunk(
        ChatChunkChoice(
            index=0,
            delta=ChatDelta(role="assistant", content=""),
            logprobs=None,
            finish_reason=None,
        )
    )
    async for event in events:
        if isinstance(event, TextDelta):
            yield chunk(
                ChatChunkChoice(
                    index=0, delta=ChatDelta(content=event.text), logprobs=None, finish_reason=None
                )
            )
        else:
            yield chunk(
                ChatChunkChoice(
                    index=0, delta=ChatDelta(), logprobs=None, finish_reason=event.reason
                )
            )
            if include_usage:
                yield chunk(None, _usage(event))
