"""Planning a chat request before the model runs: which tools it may call and how its output
is constrained (tool choice, response format, grammar), the messages as chat templates want
them, and its images fetched and decoded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..engine import EngineError
from ..engine.grammar import JSON_OBJECT_SCHEMA, check_schema_size, tool_call_schema
from ..engine.types import ImageInput, JsonSchema
from ..engine.vision import MEDIA_MARKER
from ..errors import RequestError
from ..models.manager import ResidentModel
from ..settings import Settings
from .images import load_images
from .requests import ChatRequest, Image, Tool

# none: plain text. auto: the model may answer with a tool call, parsed from its text.
# forced: the grammar makes the whole reply one {"name", "arguments"} object.
ToolMode = Literal["none", "auto", "forced"]


@dataclass
class ChatPlan:
    """What a request asks of the engine beyond sampling: tools and output constraints."""

    tools: list[Tool] = field(default_factory=list)  # those the model may call
    mode: ToolMode = "none"
    grammar: str | None = None  # the request's own GBNF
    json_schema: JsonSchema | None = None  # JSON mode, a JSON schema or a forced tool call

    @property
    def tool_names(self) -> set[str]:
        return {tool.name for tool in self.tools}

    def tool_definitions(self) -> list[dict[str, Any]] | None:
        return [tool.definition() for tool in self.tools] or None


def plan_chat(request: ChatRequest) -> ChatPlan:
    """Validate tools, tool choice, response format and grammar together; 400 on conflicts."""
    plan = ChatPlan(tools=list(request.tools))
    choice = request.tool_choice
    param = choice.param if choice is not None else "tool_choice"
    mode = choice.mode if choice is not None else ("auto" if request.tools else "none")
    if mode != "none" and not request.tools:
        raise RequestError(400, f"'{param}' needs 'tools' to choose from.", param=param,
                           code="invalid_value")
    forced = list(request.tools)
    if mode == "named":
        assert choice is not None
        forced = [tool for tool in request.tools if tool.name == choice.name]
        if not forced:
            raise RequestError(400, f"'{param}' names function '{choice.name}', which is not "
                               "in 'tools'.", param=param, code="invalid_value")
    if mode == "none":
        plan.tools = []
    plan.mode = {"none": "none", "auto": "auto"}.get(mode, "forced")  # type: ignore[assignment]

    response_format = request.response_format
    constrained = response_format is not None and response_format.type != "text"
    if sum([plan.mode == "forced", constrained, request.grammar is not None]) > 1:
        raise RequestError(400, "Use only one of a forced tool call, a JSON 'response_format' "
                           "and 'grammar': each constrains the whole reply.",
                           param="response_format", code="invalid_value")
    # The schema is compiled where the prompt is prepared (engine/constraint.py): a schema
    # that cannot be enforced is a 400 from there, before anything is generated.
    if plan.mode == "forced":
        plan.json_schema = tool_call_schema(
            [(tool.param, tool.definition()["function"]) for tool in forced], param)
    elif response_format is not None and response_format.type == "json_object":
        plan.json_schema = JsonSchema(JSON_OBJECT_SCHEMA, response_format.param)
    elif response_format is not None and response_format.type == "json_schema":
        if response_format.schema is None:
            raise RequestError(400, f"'{response_format.param}.schema' is required for "
                               "type 'json_schema'.", param=response_format.param,
                               code="invalid_value")
        plan.json_schema = JsonSchema(response_format.schema, response_format.param)
    elif request.grammar is not None:
        plan.grammar = request.grammar
    if plan.json_schema is not None:
        try:
            check_schema_size(plan.json_schema)
        except EngineError as exc:
            raise RequestError(400, str(exc), param=exc.param, code="invalid_value") from exc
    return plan


def accepts_images(model: ResidentModel) -> bool:
    # with `serve`, a catalog model's files are located on first use: its kind tells
    return model.spec.kind == "vision" or (
        model.files is not None and model.files.projector is not None
    )


def no_images(model: ResidentModel, image: Image) -> RequestError:
    return RequestError(
        400,
        f"model '{model.spec.id}' does not accept images ({image.param} is an image); use a "
        "vision model, or start this one with its projector (--mmproj).",
        param=image.param,
        code="image_not_supported",
    )


def images_of(request: ChatRequest) -> list[Image]:
    return [part for message in request.messages for part in message.content
            if isinstance(part, Image)]


def template_messages(request: ChatRequest, model: ResidentModel) -> list[dict[str, Any]]:
    """Messages → the plain dicts chat templates expect: `content` always a string.

    Templates such as SmolLM2's concatenate `content` as a string, so text parts are joined
    here, before any template sees them; each image becomes the engine's media marker.
    """
    rendered: list[dict[str, Any]] = []
    for message in request.messages:
        texts = []
        for part in message.content:
            if isinstance(part, Image):
                if not accepts_images(model):
                    raise no_images(model, part)
                texts.append(MEDIA_MARKER)
            else:
                texts.append(part)
        entry: dict[str, Any] = {"role": message.role, "content": "\n".join(texts)}
        if message.name:
            entry["name"] = message.name
        if message.role == "assistant":
            if message.reasoning:  # the name thinking models' templates read (Qwen3, R1)
                entry["reasoning_content"] = message.reasoning
            if message.function_call:
                entry["function_call"] = message.function_call
            if message.tool_calls:
                entry["tool_calls"] = [
                    {"id": call.id, "type": "function",
                     "function": {"name": call.name, "arguments": call.arguments}}
                    for call in message.tool_calls
                ]
        if message.role == "tool":
            entry["tool_call_id"] = message.tool_call_id
        rendered.append(entry)
    return rendered


async def fetch_images(
    request: ChatRequest, model: ResidentModel | None, settings: Settings
) -> list[ImageInput]:
    """Every image of the conversation, fetched and decoded, in order; 400 naming the part
    for one that cannot be used. `model` None: unknown (the caller answers 404 for it)."""
    images = images_of(request)
    if not images or model is None:
        return []
    if not accepts_images(model):
        raise no_images(model, images[0])
    if len(images) > settings.max_images:
        raise RequestError(400, f"This request has {len(images)} images; at most "
                           f"{settings.max_images} are accepted (LLAMASERVE_MAX_IMAGES).",
                           param=images[settings.max_images].param, code="too_many_images")
    return await load_images(images, settings, model.files.projector if model.files else None)
