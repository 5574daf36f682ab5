"""POST /v1/chat/completions."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..engine import EngineError, Finished, GenerationRequest
from ..engine.grammar import JSON_OBJECT_GRAMMAR, json_schema_grammar, tool_call_schema
from ..engine.tools import ParsedToolCall
from ..engine.vision import MEDIA_MARKER
from ..models.manager import ResidentModel
from .chat_images import accepts_images, message_images, no_images
from .chat_output import ChoiceDelta, ToolMode, argument_fragments, shape_choice, wire_logprobs
from .errors import APIError, in_band_error
from .generation import (
    SYSTEM_FINGERPRINT,
    merged,
    new_id,
    now,
    open_generation,
    parse_request,
    sampling_params,
    sse_response,
    stop_list,
    usage_of,
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
    FunctionDelta,
    ImagePart,
    ToolCallDelta,
    Usage,
)

logger = logging.getLogger(__name__)


def template_messages(body: ChatCompletionRequest, model: ResidentModel) -> list[dict[str, Any]]:
    """OpenAI messages → the plain dicts chat templates expect: `content` always a string.

    Templates such as SmolLM2's concatenate `content` as a string, so text parts are joined
    here, before any template sees them; each image becomes the engine's media marker.
    """
    rendered: list[dict[str, Any]] = []
    for i, message in enumerate(body.messages):
        content = message.content
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if isinstance(part, ImagePart):
                    if not accepts_images(model):
                        raise no_images(model, i, j)
                    texts.append(MEDIA_MARKER)
                    continue
                texts.append(part.text if part.type == "text" else part.refusal)
            content = "\n".join(texts)
        entry: dict[str, Any] = {
            "role": "system" if message.role == "developer" else message.role,
            "content": content or "",
        }
        if getattr(message, "name", None):
            entry["name"] = message.name
        if message.role == "assistant":
            calls = list(message.tool_calls or [])
            if message.function_call:
                entry["function_call"] = message.function_call.model_dump()
            if calls:
                entry["tool_calls"] = [call.model_dump() for call in calls]
        if message.role == "tool":
            entry["tool_call_id"] = message.tool_call_id
        rendered.append(entry)
    return rendered


@dataclass
class ChatPlan:
    """What a request asks of the engine beyond sampling: tools and output constraints."""

    tools: list[dict[str, Any]] = field(default_factory=list)  # OpenAI tool definitions
    mode: ToolMode = "none"
    grammar: str | None = None
    legacy_functions: bool = False  # answer with message.function_call, as that API did

    @property
    def tool_names(self) -> set[str]:
        return {tool["function"]["name"] for tool in self.tools}


def plan_request(body: ChatCompletionRequest) -> ChatPlan:
    """Validate tools, tool_choice, response_format and grammar together; 400 on conflicts."""
    plan = ChatPlan()
    # Normalise both APIs to: choice in none/auto/required, or the one function to call.
    choice: str | None
    forced_name: str | None = None
    if body.tools or not body.functions:
        plan.tools = [tool.model_dump(exclude_none=True) for tool in body.tools or []]
        requested = body.tool_choice
        choice = requested if isinstance(requested, str | None) else "named"
        forced_name = None if isinstance(requested, str | None) else requested.function.name
    else:
        plan.legacy_functions = True
        plan.tools = [{"type": "function", "function": f.model_dump(exclude_none=True)}
                      for f in body.functions]
        requested_call = body.function_call
        choice = requested_call if isinstance(requested_call, str | None) else "named"
        forced_name = None if isinstance(requested_call, str | None) else requested_call.name
    param = "function_call" if plan.legacy_functions else "tool_choice"
    if choice is None:
        choice = "auto" if plan.tools else "none"
    if choice != "none" and not plan.tools:
        raise APIError(400, f"'{param}' needs 'tools' to choose from.", param=param,
                       code="invalid_value")
    functions = [tool["function"] for tool in plan.tools]
    if forced_name is not None:
        functions = [f for f in functions if f["name"] == forced_name]
        if not functions:
            raise APIError(400, f"'{param}' names function '{forced_name}', which is not in "
                           "'tools'.", param=param, code="invalid_value")
    if choice == "none":
        plan.tools = []
    plan.mode = {"none": "none", "auto": "auto"}.get(choice, "forced")  # type: ignore[assignment]

    response_format = body.response_format
    constrained = response_format is not None and response_format.type != "text"
    if sum([plan.mode == "forced", constrained, body.grammar is not None]) > 1:
        raise APIError(400, "Use only one of a forced tool call, a JSON 'response_format' and "
                       "'grammar': each constrains the whole reply.", param="response_format",
                       code="invalid_value")
    try:
        if plan.mode == "forced":
            plan.grammar = json_schema_grammar(tool_call_schema(functions), param=param)
        elif response_format is not None and response_format.type == "json_object":
            plan.grammar = JSON_OBJECT_GRAMMAR
        elif response_format is not None and response_format.type == "json_schema":
            spec = response_format.json_schema
            if spec is None or spec.schema_ is None:
                raise APIError(400, "'response_format.json_schema.schema' is required for "
                               "type 'json_schema'.", param="response_format.json_schema",
                               code="invalid_value")
            plan.grammar = json_schema_grammar(spec.schema_, param="response_format.json_schema")
        elif body.grammar is not None:
            plan.grammar = body.grammar
    except EngineError as exc:
        raise APIError(400, str(exc), param=exc.param, code="invalid_value") from exc
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(400, "'top_logprobs' needs 'logprobs' set to true.",
                       param="top_logprobs", code="invalid_value")
    return plan


async def create_chat_completion(request: Request) -> Response:
    body = await parse_request(request, ChatCompletionRequest)
    plan = plan_request(body)
    if body.user:
        logger.info("chat completion for user %r on model %r", body.user, body.model)
    manager = request.app.state.manager
    images = await message_images(body, manager, request.app.state.settings)
    n = body.n or 1

    async def start(index: int) -> AsyncIterator[ChoiceDelta]:
        def build(model: ResidentModel) -> GenerationRequest:
            return GenerationRequest(
                messages=template_messages(body, model),
                tools=plan.tools or None,
                max_tokens=(body.max_completion_tokens or body.max_tokens
                            or model.spec.defaults.max_tokens),
                stop=stop_list(body.stop),
                sampling=sampling_params(body, model, choice=index),
                grammar=plan.grammar,
                logprobs=(body.top_logprobs or 0) if body.logprobs else None,
                images=images,
                cache_prompt=body.cache_prompt is not False,
            )

        _, events = await open_generation(request, body.model, build)
        return shape_choice(events, index, plan.mode, plan.tool_names, plan.legacy_functions)

    first = await start(0)  # errors before anything is sent become plain 4xx answers

    async def choice(index: int) -> AsyncIterator[ChoiceDelta]:
        async for delta in first if index == 0 else await start(index):
            yield delta

    def all_choices() -> AsyncIterator[ChoiceDelta]:
        # the n choices are decoded together, their chunks interleaved as they come
        return merged([choice(index) for index in range(n)])

    completion_id, created = new_id("chatcmpl"), now()
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = _chunks(all_choices(), completion_id, created, body.model, include_usage,
                         plan.legacy_functions)
        return sse_response(chunks)
    return JSONResponse(await _fold(all_choices(), completion_id, created, body.model, n,
                                    plan.legacy_functions))


def _called(calls: list[ParsedToolCall]) -> list[CalledTool]:
    return [
        CalledTool(id=f"call_{uuid.uuid4().hex[:24]}", type="function",
                   function=CalledFunction(name=call.name, arguments=call.arguments))
        for call in calls
    ]



async def _fold(
    deltas: AsyncIterator[ChoiceDelta], completion_id: str, created: int, model: str, n: int,
    legacy_functions: bool,
) -> dict[str, Any]:
    texts: list[list[str]] = [[] for _ in range(n)]
    logprobs: list[list] = [[] for _ in range(n)]
    calls: list[list[ParsedToolCall]] = [[] for _ in range(n)]
    finishes: list[str] = ["stop"] * n
    finished: list[Finished] = []
    async for delta in deltas:
        i = delta.index
        if delta.content:
            texts[i].append(delta.content)
        if delta.logprobs:
            logprobs[i].extend(delta.logprobs)
        if delta.tool_calls:
            calls[i].extend(delta.tool_calls)
        if delta.finished is not None:
            finishes[i] = delta.finish_reason or "stop"
            finished.append(delta.finished)
    choices = []
    for i in range(n):
        message = AssistantReply(role="assistant", refusal=None,
                                 content="".join(texts[i]) or (None if calls[i] else ""))
        if calls[i] and legacy_functions:
            first = calls[i][0]
            message.function_call = CalledFunction(name=first.name, arguments=first.arguments)
        elif calls[i]:
            message.tool_calls = _called(calls[i])
        choice = ChatChoice(index=i, message=message, finish_reason=finishes[i],
                            logprobs=wire_logprobs(logprobs[i]) if logprobs[i] else None)
        choices.append(choice)
    completion = ChatCompletion(id=completion_id, object="chat.completion", created=created,
                                model=model, system_fingerprint=SYSTEM_FINGERPRINT,
                                choices=choices, usage=usage_of(finished))
    # exclude_unset: tool_calls/function_call appear only when the model called something
    return completion.model_dump(exclude_unset=True)


async def _chunks(
    deltas: AsyncIterator[ChoiceDelta], completion_id: str, created: int, model: str,
    include_usage: bool, legacy_functions: bool,
) -> AsyncIterator[ChatCompletionChunk | dict[str, Any]]:
    def chunk(choice: ChatChunkChoice | None, usage: Usage | None = None) -> ChatCompletionChunk:
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
            if delta.content or delta.logprobs:
                logprobs = wire_logprobs(delta.logprobs) if delta.logprobs else None
                content = ChatDelta(content=delta.content or "")
                yield chunk(choice(i, content, logprobs))
            for k, call in enumerate(delta.tool_calls or []):
                called = _called([call])[0]
                for j, fragment in enumerate(argument_fragments(call.arguments)):
                    if legacy_functions:
                        function = FunctionDelta(arguments=fragment)
                        if j == 0:
                            function = FunctionDelta(name=call.name, arguments=fragment)
                        yield chunk(choice(i, ChatDelta(function_call=function)))
                        continue
                    tool = ToolCallDelta(index=k, function=FunctionDelta(arguments=fragment))
                    if j == 0:
                        tool = ToolCallDelta(index=k, id=called.id, type="function",
                                             function=FunctionDelta(name=call.name,
                                                                    arguments=fragment))
                    yield chunk(choice(i, ChatDelta(tool_calls=[tool])))
            if delta.finished is not None:
                finished.append(delta.finished)
                yield chunk(choice(i, ChatDelta(), finish=delta.finish_reason))
    except (APIError, EngineError) as exc:
        # A later choice failed after the 200 was sent: report it in the stream.
        yield in_band_error(exc)
        return
    if include_usage:
        yield chunk(None, usage_of(finished))
