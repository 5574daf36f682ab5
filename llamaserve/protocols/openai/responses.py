"""/v1/responses, OpenAI's Responses API: the request (and the stored conversation it continues)
→ a core ChatRequest, and ChoiceDeltas → the typed event stream or, folded, one Response.

Stored responses (`store`, true by default) are kept in the app's response store
(response_store.py) with the input items they answered, so `previous_response_id` continues
a conversation and GET / DELETE / input_items work.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

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
from ...core.run import start_chat
from ...errors import RequestError
from .errors import validation_error
from .http import keep_alive_of, now, parse_request, runtime
from .response_events import ResponseRun, new_item_id
from .response_store import ResponseStore
from .responses_schemas import (
    AllowedTools,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionChoice,
    InputImage,
    InputItem,
    InputItemList,
    InputItemsQuery,
    InputText,
    MessageItem,
    OutputText,
    Refusal,
    ResponseCreateRequest,
    ResponseObject,
)

logger = logging.getLogger(__name__)

LOGPROBS = "message.output_text.logprobs"
_ITEMS = TypeAdapter(list[InputItem])
# (where an item came from, for errors: "input[2]" or HISTORY; the item)
Located = tuple[str, Any]
HISTORY = "previous_response_id"  # an error in an earlier turn's item names the field


async def create_response(request: Request) -> Response:
    body = await _parse(request)
    if body.user or body.safety_identifier:
        logger.info("response for user %r on model %r", body.user or body.safety_identifier,
                    body.model)
    store: ResponseStore = request.app.state.response_store
    history = await _history(body, store)
    items = [(f"input[{i}]", item) for i, item in enumerate(_input_items(body))]
    chat = chat_request(body, history + items, keep_alive_of(request))
    _, deltas = await start_chat(chat, runtime(request))
    response = _skeleton(body, request)
    records = [record_of(item) for _, item in history + items]

    async def save(done: ResponseObject) -> None:
        await store.put(done.id, {"response": done.model_dump(mode="json"),
                                  "input_items": records})

    run = ResponseRun(response, parallel_tool_calls=body.parallel_tool_calls is not False,
                      logprobs=LOGPROBS in (body.include or []),
                      save=save if body.store is not False else None)
    if body.stream:
        return _event_stream(run.events(deltas, in_band_errors=True))
    async for _ in run.events(deltas, in_band_errors=False):
        pass
    return JSONResponse(run.snapshot())


async def retrieve_response(request: Request) -> Response:
    if request.query_params.get("stream", "false").lower() not in ("false", "0"):
        raise RequestError(400, "Streaming a stored response is only for background "
                           "responses, which this server does not run.", param="stream",
                           code="invalid_value")
    record = await _stored(request, request.path_params["response_id"], "response_id")
    return JSONResponse(record["response"])


async def delete_response(request: Request) -> Response:
    response_id = request.path_params["response_id"]
    if not await request.app.state.response_store.delete(response_id):
        raise _not_found(response_id, "response_id")
    return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})


async def list_input_items(request: Request) -> Response:
    try:
        query = InputItemsQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise validation_error(exc) from exc
    record = await _stored(request, request.path_params["response_id"], "response_id")
    items = record["input_items"]
    if query.order == "desc":
        items = items[::-1]
    if query.after is not None:
        ids = [item["id"] for item in items]
        if query.after not in ids:
            raise RequestError(400, f"No input item '{query.after}' in this response.",
                               param="after", code="invalid_value")
        items = items[ids.index(query.after) + 1:]
    page = items[:query.limit]
    listing = InputItemList(data=page, first_id=page[0]["id"] if page else None,
                            last_id=page[-1]["id"] if page else None,
                            has_more=len(items) > len(page))
    return JSONResponse(listing.model_dump(mode="json"))


# -- the request -----------------------------------------------------------------------------

async def _parse(request: Request) -> ResponseCreateRequest:
    try:
        body = await parse_request(request, ResponseCreateRequest)
    except RequestError as exc:
        cause = exc.__cause__
        if isinstance(cause, ValidationError) and cause.errors()[0]["type"] == "extra_forbidden":
            raise RequestError(400, f"Unknown parameter: '{exc.param}'.", param=exc.param,
                               code="unknown_parameter") from cause
        raise
    refused = {
        "background": (body.background, "Background responses are not run by this server; "
                       "leave out 'background' or set it to false."),
        "conversation": (body.conversation, "This server has no Conversations API: continue a "
                         "conversation with 'previous_response_id'."),
        "prompt": (body.prompt, "This server has no stored prompt templates: send "
                   "'instructions' and 'input'."),
        "moderation": (body.moderation, "This server does not moderate; leave out "
                       "'moderation'."),
    }
    for param, (value, message) in refused.items():
        if value is not None and value is not False:
            raise RequestError(400, message, param=param, code="unsupported_parameter")
    return body


def _input_items(body: ResponseCreateRequest) -> list[Any]:
    if isinstance(body.input, str):
        return [MessageItem(role="user", content=body.input)]
    return list(body.input or [])


async def _stored(request: Request, response_id: str, param: str) -> dict[str, Any]:
    record = await request.app.state.response_store.get(response_id)
    if record is None:
        raise _not_found(response_id, param)
    return record


def _not_found(response_id: str, param: str) -> RequestError:
    return RequestError(
        404, f"No stored response with id '{response_id}': it was created with store: false, "
        "deleted, or dropped as the least recently used beyond LLAMASERVE_MAX_STORED_RESPONSES "
        "(or the server restarted without --state-dir).", param=param,
        code="response_not_found")


async def _history(body: ResponseCreateRequest, store: ResponseStore) -> list[Located]:
    """The earlier turns: the previous response's input items, then its output."""
    if body.previous_response_id is None:
        return []
    record = await store.get(body.previous_response_id)
    if record is None:
        raise _not_found(body.previous_response_id, "previous_response_id")
    try:
        items = _ITEMS.validate_python(record["input_items"] + record["response"]["output"])
    except ValidationError as exc:  # stored by another version of llamaserve
        raise RequestError(400, f"The stored response '{body.previous_response_id}' cannot be "
                           f"continued ({exc.error_count()} items this server cannot read); "
                           "send the conversation as 'input' instead.",
                           param="previous_response_id", code="invalid_value") from exc
    return [(HISTORY, item) for item in items]


def chat_request(body: ResponseCreateRequest, items: list[Located],
                 keep_alive: float | None) -> ChatRequest:
    if not items:
        raise RequestError(400, "Missing required parameter: 'input'.", param="input",
                           code="missing_required_parameter")
    tools = [Tool(tool.name, tool.description, tool.parameters, f"tools[{i}].parameters")
             for i, tool in enumerate(body.tools or [])]
    tools, choice = _tool_choice(body, tools)
    text_format = body.text.format if body.text is not None else None
    response_format = None
    if text_format is not None:
        response_format = ResponseFormat(text_format.type, getattr(text_format, "schema_", None),
                                         "text.format")
    return ChatRequest(
        model=body.model,
        sampling=Sampling(temperature=body.temperature, top_p=body.top_p, top_k=body.top_k,
                          min_p=body.min_p, repeat_penalty=body.repeat_penalty, seed=body.seed),
        max_tokens=body.max_output_tokens,
        keep_alive=keep_alive,
        messages=messages_of(items, body.instructions),
        tools=tools,
        tool_choice=choice,
        response_format=response_format,
        logprobs=(body.top_logprobs or 0) if LOGPROBS in (body.include or []) else None,
    )


def _tool_choice(body: ResponseCreateRequest, tools: list[Tool]
                 ) -> tuple[list[Tool], ToolChoice | None]:
    choice = body.tool_choice
    if choice is None:
        return tools, None
    if isinstance(choice, str):
        return tools, ToolChoice(choice)  # type: ignore[arg-type]
    if isinstance(choice, FunctionChoice):
        return tools, ToolChoice("named", choice.name)
    assert isinstance(choice, AllowedTools)  # only the listed functions, in its mode
    known = {tool.name for tool in tools}
    names = set()
    for j, entry in enumerate(choice.tools):
        name = entry.get("name")
        if entry.get("type") != "function" or name not in known:
            raise RequestError(400, "Each of 'tool_choice.tools' must be {'type': 'function', "
                               "'name': NAME} naming a function of 'tools'.",
                               param=f"tool_choice.tools[{j}]", code="invalid_value")
        names.add(name)
    return [tool for tool in tools if tool.name in names], ToolChoice(choice.mode)


def messages_of(items: list[Located], instructions: str | None) -> list[Message]:
    """Input items → core messages: a tool call joins the assistant message before it (chat
    templates want one assistant turn with its calls); a call's output is a tool message."""
    messages = [Message("system", [instructions])] if instructions else []
    for where, item in items:
        if isinstance(item, MessageItem):
            role = "system" if item.role == "developer" else item.role
            parts = _ASSISTANT_PARTS if role == "assistant" else _INPUT_PARTS
            messages.append(Message(role, _content(item.content, f"{where}.content", parts)))
        elif isinstance(item, FunctionCallItem):
            call = ToolCall(item.call_id, item.name, item.arguments)
            if messages and messages[-1].role == "assistant":
                messages[-1].tool_calls.append(call)
            else:
                messages.append(Message("assistant", tool_calls=[call]))
        elif isinstance(item, FunctionCallOutputItem):
            messages.append(Message("tool", _content(item.output, f"{where}.output",
                                                     _INPUT_PARTS),
                                    tool_call_id=item.call_id))
    return messages


# What each place takes, as OpenAI has it; input_text in an assistant message is let through
# (some clients send it) and stored as output_text.
_INPUT_PARTS = (InputText, InputImage)
_ASSISTANT_PARTS = (OutputText, Refusal, InputText)
_PART_TYPES = {InputText: "input_text", InputImage: "input_image", OutputText: "output_text",
               Refusal: "refusal"}


def _content(content: str | list[Any], where: str, allowed: tuple[type, ...]
             ) -> list[str | Image]:
    if isinstance(content, str):
        return [content]
    pieces: list[str | Image] = []
    for j, part in enumerate(content):
        if not isinstance(part, allowed):
            names = " or ".join(f"'{_PART_TYPES[kind]}'" for kind in allowed)
            raise RequestError(400, f"'{part.type}' parts are not accepted here: use {names}.",
                               param=_at(where, j, ".type"), code="invalid_value")
        if isinstance(part, InputText | OutputText):
            pieces.append(part.text)
        elif isinstance(part, Refusal):
            pieces.append(part.refusal)
        elif isinstance(part, InputImage):
            if part.image_url is None:
                raise RequestError(400, "This server has no Files API: send the image as "
                                   "'image_url' (an http(s) URL or a data: URI).",
                                   param=_at(where, j, ".image_url"), code="invalid_value")
            pieces.append(Image(part.image_url, _at(where, j)))
    return pieces


def _at(where: str, j: int, field: str = "") -> str:
    """The request field of part j of `where`; an earlier turn's part is previous_response_id's."""
    return HISTORY if where.startswith(HISTORY) else f"{where}[{j}]{field}"


# -- the answer ------------------------------------------------------------------------------

def _skeleton(body: ResponseCreateRequest, request: Request) -> ResponseObject:
    """The response before any output: the request's settings echoed as OpenAI does."""
    model = request.app.state.manager.find(body.model)
    defaults = model.spec.defaults if model is not None else None
    temperature = body.temperature if body.temperature is not None else \
        getattr(defaults, "temperature", None)
    top_p = body.top_p if body.top_p is not None else getattr(defaults, "top_p", None)
    choice = body.tool_choice
    return ResponseObject(
        id=new_item_id("resp"), created_at=now(), instructions=body.instructions,
        metadata=body.metadata or {}, model=body.model,
        parallel_tool_calls=body.parallel_tool_calls is not False,
        temperature=1.0 if temperature is None else temperature,
        tool_choice=choice.model_dump(mode="json") if hasattr(choice, "model_dump") else
        (choice or "auto"),
        tools=[tool.model_dump(mode="json", by_alias=True, exclude_none=True)
               for tool in body.tools or []],
        top_p=1.0 if top_p is None else top_p,
        max_output_tokens=body.max_output_tokens, max_tool_calls=body.max_tool_calls,
        previous_response_id=body.previous_response_id,
        prompt_cache_key=body.prompt_cache_key,
        reasoning=body.reasoning.model_dump(mode="json") if body.reasoning else None,
        safety_identifier=body.safety_identifier, store=body.store is not False,
        text=body.text.model_dump(mode="json", by_alias=True, exclude_none=True)
        if body.text and body.text.format else {"format": {"type": "text"}},
        top_logprobs=body.top_logprobs, truncation=body.truncation or "disabled",
        user=body.user,
    )


def record_of(item: Any) -> dict[str, Any]:
    """An input item as stored and listed by input_items: with an id and a status, and a
    message's content as a list of parts (output_text in assistant messages)."""
    data = item.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(item, MessageItem):
        assistant = item.role == "assistant"
        parts = [InputText(type="input_text", text=item.content)] \
            if isinstance(item.content, str) else item.content
        data["content"] = [
            {"type": "output_text", "text": part.text, "annotations": [], "logprobs": []}
            if assistant and isinstance(part, InputText)
            else part.model_dump(mode="json", by_alias=True, exclude_none=True)
            for part in parts
        ]
        data.setdefault("id", new_item_id("msg"))
    else:
        data.setdefault("id", new_item_id("fc" if isinstance(item, FunctionCallItem)
                                          else "fco"))
    data.setdefault("status", "completed")
    return data


def _event_stream(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    """Server-Sent Events as the Responses API sends them: `event: TYPE` and `data: JSON`
    (no `[DONE]`: the terminal event ends the stream)."""

    async def frames() -> AsyncIterator[bytes]:
        async for event in events:
            yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()

    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
