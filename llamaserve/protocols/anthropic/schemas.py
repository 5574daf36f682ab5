"""Pydantic models of Anthropic's Messages API: the request bodies of `POST /v1/messages` and
`POST /v1/messages/count_tokens`, the `message` answer and the stream's events.

Names, shapes and ranges follow the `anthropic` package's `types/` (MessageCreateParams,
Message, RawMessageStreamEvent). Requests allow extra fields: clients send fields of newer API
versions and betas (`cache_control`, `citations`, `container`, `context_management`...) that
llamaserve has no use for and ignores.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# ---------------------------------------------------------------------------- content blocks


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")


class TextBlock(_Request):
    type: Literal["text"]
    text: str


class Base64ImageSource(_Request):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class URLImageSource(_Request):
    type: Literal["url"]
    url: str


class ImageBlock(_Request):
    type: Literal["image"]
    source: Annotated[Base64ImageSource | URLImageSource, Field(discriminator="type")]


class ToolUseBlock(_Request):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


ToolResultContent = Annotated[TextBlock | ImageBlock, Field(discriminator="type")]


class ToolResultBlock(_Request):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[ToolResultContent] | None = None
    is_error: bool | None = None


class ThinkingBlock(_Request):
    """A previous turn's thinking, as clients send it back; dropped (no model here thinks)."""

    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Request):
    type: Literal["redacted_thinking"]
    data: str


UserBlock = Annotated[TextBlock | ImageBlock | ToolResultBlock, Field(discriminator="type")]
AssistantBlock = Annotated[
    TextBlock | ToolUseBlock | ThinkingBlock | RedactedThinkingBlock, Field(discriminator="type")
]


class UserMessage(_Request):
    role: Literal["user"]
    content: str | list[UserBlock]


class AssistantMessage(_Request):
    role: Literal["assistant"]
    content: str | list[AssistantBlock]


class SystemMessage(_Request):
    role: Literal["system"]
    content: str | list[TextBlock]


InputMessage = Annotated[UserMessage | AssistantMessage | SystemMessage,
                         Field(discriminator="role")]

# ---------------------------------------------------------------------------- requests


class Tool(_Request):
    # `type` first, so that a server tool (`{"type": "web_search_20250305", ...}`, with no
    # input_schema) is refused for what it is rather than for a missing input_schema
    type: str | None = None
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,128}$")
    description: str | None = None
    input_schema: dict[str, Any]

    @field_validator("type")
    @classmethod
    def _client_tool(cls, value: str | None) -> str | None:
        if value not in (None, "custom"):
            raise ValueError(
                f"'{value}' is one of Anthropic's server or versioned tools, which llamaserve "
                "does not run; define a client tool with name, description and input_schema")
        return value


class ToolChoiceAuto(_Request):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(_Request):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(_Request):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(_Request):
    type: Literal["none"]


ToolChoice = Annotated[ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone,
                       Field(discriminator="type")]


class Thinking(_Request):
    """Accepted so that clients which ask for thinking work; the models here do not think."""

    type: Literal["enabled", "disabled", "adaptive", "between_tools"]
    budget_tokens: int | None = None


class Metadata(_Request):
    user_id: str | None = None


class OutputFormat(_Request):
    type: Literal["json_schema"]
    # named schema_ in Python: `schema` would shadow a pydantic BaseModel attribute
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Request):
    effort: str | None = None  # how hard a thinking model tries: nothing to do here
    format: OutputFormat | None = None


# Limits beyond Anthropic's own keep one request from tying up the server; each one is a 400
# naming the field.
MAX_MESSAGES = 4096
MAX_TOOLS = 256
MAX_STOP_SEQUENCES = 64
MAX_STOP_CHARS = 256

Messages = Annotated[list[InputMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
System = str | list[TextBlock] | None
Tools = Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None


class MessagesRequest(_Request):
    max_tokens: int = Field(ge=1)
    messages: Messages
    model: str
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None
    service_tier: str | None = None
    stop_sequences: Annotated[
        list[Annotated[str, Field(max_length=MAX_STOP_CHARS)]],
        Field(max_length=MAX_STOP_SEQUENCES),
    ] | None = None
    stream: bool | None = None
    system: System = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    thinking: Thinking | None = None
    tool_choice: ToolChoice | None = None
    tools: Tools = None
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0, le=1)


class CountTokensRequest(_Request):
    messages: Messages
    model: str
    output_config: OutputConfig | None = None
    system: System = None
    thinking: Thinking | None = None
    tool_choice: ToolChoice | None = None
    tools: Tools = None


# ---------------------------------------------------------------------------- answers


class TextContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ToolUseContent(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use",
                     "model_context_window_exceeded"]


class Usage(BaseModel):
    # Anthropic's input_tokens leave out the tokens read from the cache: a prompt is
    # input_tokens + cache_creation_input_tokens + cache_read_input_tokens
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class Message(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[TextContent | ToolUseContent]
    stop_reason: StopReason | None
    stop_sequence: str | None
    usage: Usage


class TokensCount(BaseModel):
    input_tokens: int


# ---------------------------------------------------------------------------- stream events


class MessageStart(BaseModel):
    type: Literal["message_start"] = "message_start"
    message: Message


class ContentBlockStart(BaseModel):
    type: Literal["content_block_start"] = "content_block_start"
    index: int
    content_block: TextContent | ToolUseContent


class TextDelta(BaseModel):
    type: Literal["text_delta"] = "text_delta"
    text: str


class InputJSONDelta(BaseModel):
    type: Literal["input_json_delta"] = "input_json_delta"
    partial_json: str


class ContentBlockDelta(BaseModel):
    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: TextDelta | InputJSONDelta


class ContentBlockStop(BaseModel):
    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class StopDelta(BaseModel):
    stop_reason: StopReason
    stop_sequence: str | None


class MessageDelta(BaseModel):
    type: Literal["message_delta"] = "message_delta"
    delta: StopDelta
    usage: Usage  # cumulative: clients overwrite message_start's counts with these


class MessageStop(BaseModel):
    type: Literal["message_stop"] = "message_stop"


class Ping(BaseModel):
    type: Literal["ping"] = "ping"


StreamEvent = (MessageStart | ContentBlockStart | ContentBlockDelta | ContentBlockStop
               | MessageDelta | MessageStop | Ping)
