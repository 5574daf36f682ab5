"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's body → a core ChatRequest, and
ChoiceDeltas → one `message` (folded) or its event stream (stream.py)."""

from __future__ import annotations

import json
import logging
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...core.count import count_prompt_tokens
from ...core.requests import (
    ChatRequest,
    Image,
    Message,
    ResponseFormat,
    Sampling,
    Tool,
    ToolCall,
    ToolChoice,
)
from ...core.run import Runtime, start_chat
from ...errors import RequestError
from .errors import anthropic_errors, parse_json, validation_error
from .reply import Reply, fold
from .schemas import (
    AssistantMessage,
    CountTokensRequest,
    ImageBlock,
    MessagesRequest,
    SystemMessage,
    TextBlock,
    TokensCount,
    ToolResultBlock,
    ToolUseBlock,
)
from .stream import event_stream

logger = logging.getLogger(__name__)
BodyT = TypeVar("BodyT", bound=BaseModel)


@anthropic_errors
async def create_message(request: Request) -> Response:
    body = await parse_body(request, MessagesRequest)
    if body.metadata and body.metadata.user_id:  # Claude Code sends one with every request
        logger.debug("message for user %r on model %r", body.metadata.user_id, body.model)
    chat, runtime = chat_request(body), runtime_of(request)
    reply = Reply(body.model, body.max_tokens, _single_tool_use(body))
    _, deltas = await start_chat(chat, runtime)
    if not body.stream:
        return JSONResponse((await fold(deltas, reply)).model_dump(mode="json"))
    try:
        # message_start tells the prompt's size before the first token: counted through the
        # same template and tokenizer as the generation, which is under way
        prompt_tokens = await count_prompt_tokens(chat, runtime)
    except BaseException:
        await deltas.aclose()  # type: ignore[attr-defined]
        raise
    return event_stream(deltas, reply, prompt_tokens)


@anthropic_errors
async def count_tokens(request: Request) -> Response:
    body = await parse_body(request, CountTokensRequest)
    count = await count_prompt_tokens(chat_request(body), runtime_of(request))
    return JSONResponse(TokensCount(input_tokens=count).model_dump())


async def parse_body(request: Request, schema: type[BodyT]) -> BodyT:
    body = parse_json(await request.body())
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc


def runtime_of(request: Request) -> Runtime:
    state = request.app.state
    return Runtime(state.manager, state.settings, state.metrics,
                   request.scope.setdefault("state", {}))


# -- the request -----------------------------------------------------------------------------

def chat_request(body: MessagesRequest | CountTokensRequest) -> ChatRequest:
    messages: list[Message] = []
    if body.system:
        messages.append(Message("system", _texts(body.system)))
    for i, message in enumerate(body.messages):
        messages.extend(_messages(i, message))
    tools = [Tool(tool.name, tool.description, tool.input_schema, f"tools.{i}.input_schema")
             for i, tool in enumerate(body.tools or [])]
    response_format = None
    if body.output_config is not None and body.output_config.format is not None:
        response_format = ResponseFormat("json_schema", body.output_config.format.schema_,
                                         "output_config.format")
    chat = ChatRequest(model=body.model, messages=messages, tools=tools,
                       tool_choice=_tool_choice(body), response_format=response_format)
    if isinstance(body, MessagesRequest):
        if body.messages[-1].role == "assistant":
            raise RequestError(
                400, "This model does not support assistant message prefill. The "
                "conversation must end with a user message.",
                param=f"messages.{len(body.messages) - 1}")
        chat.sampling = Sampling(temperature=body.temperature, top_p=body.top_p,
                                 top_k=body.top_k)
        chat.max_tokens = body.max_tokens
        # Claude Code asks for 32000 tokens whatever the model; as Anthropic's newer models
        # do, generate until the context is full (model_context_window_exceeded), not a 400
        chat.fit_context = True
        chat.stop = list(body.stop_sequences or [])
    return chat


def _texts(content: str | list[TextBlock]) -> list[str | Image]:
    return [content] if isinstance(content, str) else [block.text for block in content]


def _image(block: ImageBlock, param: str) -> Image:
    source = block.source
    if source.type == "url":
        return Image(source.url, param)
    return Image(f"data:{source.media_type};base64,{source.data}", param)


def _messages(i: int, message: object) -> list[Message]:
    """One Anthropic message → core messages: a user turn's tool_result blocks become `tool`
    messages (in order, between its other parts), tool_use blocks become tool calls."""
    if isinstance(message, SystemMessage):
        return [Message("system", _texts(message.content))]
    if isinstance(message, AssistantMessage):
        reply = Message("assistant")
        for block in [message.content] if isinstance(message.content, str) else message.content:
            if isinstance(block, str):
                reply.content.append(block)
            elif isinstance(block, TextBlock):
                reply.content.append(block.text)
            elif isinstance(block, ToolUseBlock):
                arguments = json.dumps(block.input, ensure_ascii=False)
                reply.tool_calls.append(ToolCall(block.id, block.name, arguments))
            # thinking blocks of earlier turns are dropped: no model here reads them
        return [reply]
    assert hasattr(message, "content")
    content = message.content
    if isinstance(content, str):
        return [Message("user", [content])]
    result: list[Message] = []
    parts: list[str | Image] = []
    for j, block in enumerate(content):
        if isinstance(block, TextBlock):
            parts.append(block.text)
        elif isinstance(block, ImageBlock):
            parts.append(_image(block, f"messages.{i}.content.{j}"))
        elif isinstance(block, ToolResultBlock):
            if parts:
                result.append(Message("user", parts))
                parts = []
            result.append(_tool_result(block, f"messages.{i}.content.{j}"))
    if parts or not result:
        result.append(Message("user", parts))
    return result


def _tool_result(block: ToolResultBlock, param: str) -> Message:
    parts: list[str | Image] = []
    if isinstance(block.content, str):
        parts.append(block.content)
    for k, item in enumerate(block.content if isinstance(block.content, list) else []):
        parts.append(item.text if isinstance(item, TextBlock)
                     else _image(item, f"{param}.content.{k}"))
    if block.is_error:
        parts.insert(0, "Error:")  # the model should know the tool failed
    return Message("tool", parts, tool_call_id=block.tool_use_id)


def _tool_choice(body: MessagesRequest | CountTokensRequest) -> ToolChoice | None:
    choice = body.tool_choice
    if choice is None or (choice.type == "auto" and not body.tools):
        return None  # auto without tools: nothing to choose, as Anthropic answers it
    if choice.type == "tool":
        return ToolChoice("named", choice.name)
    return ToolChoice({"auto": "auto", "any": "required", "none": "none"}[choice.type])


def _single_tool_use(body: MessagesRequest) -> bool:
    return bool(body.tool_choice is not None
                and getattr(body.tool_choice, "disable_parallel_tool_use", None))
