"""Pydantic models of POST /v1/responses and the objects it answers with.

Names, ranges and order follow the `openai` package's `types/responses/` (the request:
`response_create_params.py`; the answer: `response.py`). Unlike the chat schemas, unknown
fields are refused (OpenAI answers "Unknown parameter" too): every field the SDK sends is
declared, those this server does not act on included, so a typo is a 400 rather than silently
ignored. Unions are chosen by the item's `type` (callable discriminators with capitalised tags,
which errors.py leaves out of a field's path), so an error names `input[2].content[0].type`
rather than every union member pydantic tried.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .schemas import MAX_MESSAGES, MAX_TOOLS

Status = Literal["in_progress", "completed", "incomplete"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Unsupported(BaseModel):
    """An object of a `type` this server does not serve: a 400 naming its `type`."""

    model_config = ConfigDict(extra="allow")
    supported: ClassVar[str] = ""
    type: Any = None

    @model_validator(mode="before")
    @classmethod
    def _object(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise PydanticCustomError("object_type", "expected an object with a 'type'")
        return value

    @field_validator("type")
    @classmethod
    def _refuse(cls, value: Any) -> Any:
        raise PydanticCustomError(
            "unsupported_type", "'{type}' is not supported by this server; use {supported}",
            {"type": value, "supported": cls.supported})


def _by_type(tags: dict[str, str], *, text: str | None = None,
             with_role: str | None = None) -> Discriminator:
    """Choose a union member by the value's `type`: `tags` maps types to members; `text` is
    the member for a string, `with_role` the type of an object that has a role but no type
    (an easy input message). Anything else is the `Unsupported` member."""

    def tag(value: Any) -> str:
        if isinstance(value, str) and text is not None:
            return text
        if isinstance(value, BaseModel):
            kind = getattr(value, "type", None)
        elif isinstance(value, dict):
            kind = value.get("type", with_role if "role" in value else None)
        else:
            return "Unsupported"
        return tags.get(kind, "Unsupported") if isinstance(kind, str) else "Unsupported"

    return Discriminator(tag)


def _text_or(member: str) -> Discriminator:
    return Discriminator(lambda value: "Text" if isinstance(value, str) else member)


# ---------------------------------------------------------------------------- content parts


class InputText(_Strict):
    text: str
    type: Literal["input_text"]
    prompt_cache_breakpoint: dict[str, Any] | None = None  # ignored


class InputImage(_Strict):
    detail: Literal["low", "high", "auto", "original"] = "auto"
    type: Literal["input_image"]
    file_id: str | None = None  # no Files API here: refused in the translation
    image_url: str | None = None  # an http(s) URL or a data: URI
    prompt_cache_breakpoint: dict[str, Any] | None = None  # ignored


class OutputText(_Strict):
    """Also an input part: the text of an earlier assistant message."""

    annotations: list[dict[str, Any]] = Field(default_factory=list)
    text: str
    type: Literal["output_text"] = "output_text"
    logprobs: list[dict[str, Any]] | None = None


class Refusal(_Strict):
    refusal: str
    type: Literal["refusal"]


class UnsupportedPart(_Unsupported):
    supported = "'input_text' or 'input_image' parts ('output_text' in assistant messages)"


ContentPart = Annotated[
    Annotated[InputText, Tag("InputText")] | Annotated[InputImage, Tag("InputImage")]
    | Annotated[OutputText, Tag("OutputText")] | Annotated[Refusal, Tag("Refusal")]
    | Annotated[UnsupportedPart, Tag("Unsupported")],
    _by_type({"input_text": "InputText", "input_image": "InputImage",
              "output_text": "OutputText", "refusal": "Refusal"}),
]
Content = Annotated[
    Annotated[str, Tag("Text")] | Annotated[list[ContentPart], Tag("Parts")], _text_or("Parts")]

# ---------------------------------------------------------------------------- input items


class MessageItem(_Strict):
    """EasyInputMessage, Message and ResponseOutputMessage: a role and its content."""

    content: Content
    role: Literal["user", "assistant", "system", "developer"]
    type: Literal["message"] = "message"
    id: str | None = None
    status: Status | None = None
    phase: Literal["commentary", "final_answer"] | None = None


class FunctionCallItem(_Strict):
    """A tool call the model made (ResponseFunctionToolCall), sent back as history."""

    arguments: str
    call_id: str
    name: str
    type: Literal["function_call"]
    id: str | None = None
    status: Status | None = None
    namespace: str | None = None  # ignored
    caller: dict[str, Any] | None = None  # ignored
    async_: bool | None = Field(default=None, alias="async")  # ignored


class FunctionCallOutputItem(_Strict):
    """The result of a tool call, for the model to read."""

    call_id: str | None = None
    output: Content
    type: Literal["function_call_output"]
    id: str | None = None
    status: Status | None = None
    name: str | None = None
    namespace: str | None = None  # ignored
    caller: dict[str, Any] | None = None  # ignored


class UnsupportedItem(_Unsupported):
    supported = "'message', 'function_call' or 'function_call_output' items"


InputItem = Annotated[
    Annotated[MessageItem, Tag("Message")] | Annotated[FunctionCallItem, Tag("FunctionCall")]
    | Annotated[FunctionCallOutputItem, Tag("FunctionCallOutput")]
    | Annotated[UnsupportedItem, Tag("Unsupported")],
    _by_type({"message": "Message", "function_call": "FunctionCall",
              "function_call_output": "FunctionCallOutput"}, with_role="message"),
]
InputItems = Annotated[list[InputItem], Field(max_length=MAX_MESSAGES)]

# ---------------------------------------------------------------------------- tools


class FunctionTool(_Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    type: Literal["function"]
    allowed_callers: list[Literal["direct", "programmatic"]] | None = None  # ignored
    async_: bool | None = Field(default=None, alias="async")  # ignored
    defer_loading: bool | None = None  # ignored
    description: str | None = None
    output_schema: dict[str, Any] | None = None  # ignored


class UnsupportedTool(_Unsupported):
    supported = "'function' tools (hosted tools such as web search run on OpenAI's servers)"


ToolSpec = Annotated[
    Annotated[FunctionTool, Tag("Function")] | Annotated[UnsupportedTool, Tag("Unsupported")],
    _by_type({"function": "Function"}),
]


class FunctionChoice(_Strict):
    name: str
    type: Literal["function"]


class AllowedTools(_Strict):
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]] = Field(max_length=MAX_TOOLS)  # {"type": "function", "name"}
    type: Literal["allowed_tools"]


class UnsupportedToolChoice(_Unsupported):
    supported = "'auto', 'none', 'required', {'type': 'function', 'name': ...} or " \
        "{'type': 'allowed_tools', ...}"


ToolChoiceSpec = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("Mode")]
    | Annotated[FunctionChoice, Tag("Function")] | Annotated[AllowedTools, Tag("Allowed")]
    | Annotated[UnsupportedToolChoice, Tag("Unsupported")],
    _by_type({"function": "Function", "allowed_tools": "Allowed"}, text="Mode"),
]

# ---------------------------------------------------------------------------- text, reasoning


class TextFormat(_Strict):
    type: Literal["text"]


class JSONObjectFormat(_Strict):
    type: Literal["json_object"]


class JSONSchemaFormat(_Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    # named schema_ in Python: `schema` would shadow a pydantic BaseModel attribute
    schema_: dict[str, Any] = Field(alias="schema")
    type: Literal["json_schema"]
    description: str | None = None
    strict: bool | None = None


class UnsupportedFormat(_Unsupported):
    supported = "'text', 'json_object' or 'json_schema'"


class TextConfig(_Strict):
    format: Annotated[
        Annotated[TextFormat, Tag("Text")] | Annotated[JSONObjectFormat, Tag("Object")]
        | Annotated[JSONSchemaFormat, Tag("Schema")]
        | Annotated[UnsupportedFormat, Tag("Unsupported")],
        _by_type({"text": "Text", "json_object": "Object", "json_schema": "Schema"}),
    ] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None  # ignored


class Reasoning(_Strict):
    """Accepted and ignored: the models served here do not think before answering."""

    context: Literal["auto", "current_turn", "all_turns"] | None = None
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None
    mode: str | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class StreamOptions(_Strict):
    include_obfuscation: bool | None = None  # ignored: no obfuscation field is sent


Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
    Field(max_length=16),
]
Includable = Literal[
    "file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
    "message.input_image.image_url", "computer_call_output.output.image_url",
    "code_interpreter_call.outputs", "reasoning.encrypted_content",
    "message.output_text.logprobs",
]

# ---------------------------------------------------------------------------- the request


class ResponseCreateRequest(_Strict):
    """`ResponseCreateParams`, field by field (the SDK's order). What this server does with
    each is in the README's table; 'ignored' fields are still checked for their type."""

    access_programs: dict[str, Any] | None = None  # ignored
    background: bool | None = None  # true: 400, nothing runs in the background here
    background_options: dict[str, Any] | None = None  # ignored
    context_management: list[dict[str, Any]] | None = None  # ignored
    conversation: str | dict[str, Any] | None = None  # 400: no Conversations API
    image: dict[str, Any] | None = None  # ignored
    include: list[Includable] | None = None  # only message.output_text.logprobs acts
    input: Annotated[Annotated[str, Tag("Text")] | Annotated[InputItems, Tag("Items")],
                     _text_or("Items")] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_tool_calls: int | None = Field(default=None, ge=1)  # ignored: built-in tools only
    metadata: Metadata | None = None
    model: str
    moderation: dict[str, Any] | None = None  # 400: no moderation here
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    prompt: dict[str, Any] | None = None  # 400: no stored prompt templates
    prompt_cache_key: str | None = None  # ignored: the prefix cache needs no key
    prompt_cache_options: dict[str, Any] | None = None  # ignored
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None  # ignored
    reasoning: Reasoning | None = None
    safety_identifier: str | None = Field(default=None, max_length=128)
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast",
                          "ultrafast"] | None = None  # ignored
    store: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    text: TextConfig | None = None
    tool_choice: ToolChoiceSpec | None = None
    tools: list[ToolSpec] | None = Field(default=None, max_length=MAX_TOOLS)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    top_p: float | None = Field(default=None, ge=0, le=1)
    truncation: Literal["auto", "disabled"] | None = None  # auto: ignored (400 if too long)
    user: str | None = None
    # Codex sends this (not in the SDK): its turn metadata, for OpenAI's logs; ignored
    client_metadata: dict[str, Any] | None = None
    # llamaserve's own, as on the other OpenAI routes
    keep_alive: str | float | None = None  # Ollama's: how long the model stays loaded
    seed: int | None = None
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repeat_penalty: float | None = Field(default=None, ge=0)

# ---------------------------------------------------------------------------- the answer


class OutputMessage(BaseModel):
    id: str
    content: list[OutputText]
    role: Literal["assistant"] = "assistant"
    status: Status
    type: Literal["message"] = "message"


class FunctionCall(BaseModel):
    arguments: str
    call_id: str
    name: str
    type: Literal["function_call"] = "function_call"
    id: str
    status: Status


class InputTokensDetails(BaseModel):
    cache_write_tokens: int = 0  # OpenAI's billing notion; nothing is billed here
    cached_tokens: int  # prompt tokens whose KV cells came from the prefix cache


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseError(BaseModel):
    code: str  # one of ResponseError's codes: server_error, rate_limit_exceeded, ...
    message: str


class ResponseObject(BaseModel):
    """`openai.types.responses.Response`: required fields first, then optional, as the SDK."""

    id: str
    created_at: int
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    model: str
    object: Literal["response"] = "response"
    output: list[OutputMessage | FunctionCall] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    temperature: float | None = None
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    top_p: float | None = None
    background: bool = False
    completed_at: int | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    previous_response_id: str | None = None
    prompt_cache_key: str | None = None
    reasoning: dict[str, Any] | None = None
    safety_identifier: str | None = None
    status: Literal["completed", "failed", "in_progress", "incomplete"] = "in_progress"
    store: bool = True  # not in the SDK's model, but in OpenAI's answers
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    top_logprobs: int | None = None
    truncation: Literal["auto", "disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None


class InputItemsQuery(BaseModel):
    """GET /v1/responses/{id}/input_items' query (`input_item_list_params.py`)."""

    after: str | None = None
    limit: int = Field(default=20, ge=1, le=100)
    order: Literal["asc", "desc"] = "desc"


class InputItemList(BaseModel):
    """`ResponseItemList`."""

    data: list[dict[str, Any]]
    first_id: str | None
    has_more: bool
    last_id: str | None
    object: Literal["list"] = "list"
