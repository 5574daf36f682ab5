"""Ollama's request bodies, in the field order of its API reference (`ollama` client types).

Unknown top-level fields and unknown `options` are accepted and ignored, as Ollama does; a
known field of the wrong type is a 400.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, field_validator

MAX_MESSAGES = 4096
MAX_TOOLS = 256
# How Ollama names a model: [host/][namespace/]name[:tag]; generous, but no control characters
MODEL_NAME = r"^[^\x00-\x1f]+$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Options(BaseModel):
    """`options`: llama.cpp's settings by Ollama's names. Load-time ones (num_gpu, num_thread,
    ...) are per server here, set on the command line: accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    # load time
    numa: bool | None = None
    num_ctx: int | None = Field(default=None, ge=1)
    num_batch: int | None = None
    num_gpu: int | None = None
    main_gpu: int | None = None
    low_vram: bool | None = None
    f16_kv: bool | None = None
    logits_all: bool | None = None
    vocab_only: bool | None = None
    use_mmap: bool | None = None
    use_mlock: bool | None = None
    embedding_only: bool | None = None
    num_thread: int | None = None
    # run time
    num_keep: int | None = None
    seed: int | None = None
    num_predict: int | None = None
    top_k: int | None = None
    top_p: float | None = Field(default=None, ge=0, le=1)
    min_p: float | None = Field(default=None, ge=0, le=1)
    tfs_z: float | None = None
    typical_p: float | None = Field(default=None, gt=0, le=1)
    repeat_last_n: int | None = None
    temperature: float | None = Field(default=None, ge=0)
    repeat_penalty: float | None = Field(default=None, ge=0)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    mirostat: int | None = Field(default=None, ge=0, le=2)
    mirostat_tau: float | None = Field(default=None, gt=0)
    mirostat_eta: float | None = Field(default=None, gt=0)
    penalize_newline: bool | None = None
    stop: list[str] | str | None = None


KeepAlive = StrictFloat | str | None  # not a bool: pydantic would read true as 1 second
# "" or "json", or a JSON schema object
Format = str | dict[str, Any] | None


class _Generation(_Body):
    """What /api/chat and /api/generate share."""

    model: str = Field(min_length=1, pattern=MODEL_NAME)
    format: Format = None
    options: Options | None = None
    stream: bool | None = True  # Ollama streams unless told not to
    keep_alive: KeepAlive = None
    think: bool | str | None = None  # true, false or a level: no model here thinks
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @field_validator("format")
    @classmethod
    def _format(cls, value: Format) -> Format:
        if isinstance(value, str) and value not in ("", "json"):
            raise ValueError('must be "json" or a JSON schema object')
        return value


class CalledFunction(_Body):
    index: int | None = None
    name: str = Field(min_length=1)
    arguments: dict[str, Any] | str = Field(default_factory=dict)  # an object (or its JSON)


class CalledTool(_Body):
    id: str | None = None
    function: CalledFunction


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    thinking: str | None = None  # accepted, dropped: no model here thinks
    images: list[str] | None = None  # base64
    tool_calls: list[CalledTool] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class ToolFunction(_Body):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDefinition(_Body):
    type: Literal["function"] = "function"
    function: ToolFunction


class ChatBody(_Generation):
    messages: list[ChatMessage] | None = Field(default=None, max_length=MAX_MESSAGES)
    tools: list[ToolDefinition] | None = Field(default=None, max_length=MAX_TOOLS)


class GenerateBody(_Generation):
    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None  # deprecated: accepted and ignored
    raw: bool | None = None
    images: list[str] | None = None


class EmbedBody(_Body):
    model: str = Field(min_length=1, pattern=MODEL_NAME)
    input: str | list[str] = ""
    truncate: bool | None = True  # Ollama's default: cut inputs to the model's window
    options: Options | None = None
    keep_alive: KeepAlive = None
    dimensions: int | None = Field(default=None, ge=1)


class EmbeddingsBody(_Body):
    model: str = Field(min_length=1, pattern=MODEL_NAME)
    prompt: str | None = None
    options: Options | None = None
    keep_alive: KeepAlive = None


class _Named(_Body):
    """`model`, or `name` as older clients send it."""

    model: str | None = Field(default=None, pattern=MODEL_NAME)
    name: str | None = Field(default=None, pattern=MODEL_NAME)

    @property
    def target(self) -> str:
        return self.model or self.name or ""


class PullBody(_Named):
    insecure: bool | None = None  # the Hub is always HTTPS (or HF_ENDPOINT): ignored
    stream: bool | None = True


class DeleteBody(_Named):
    pass


class ShowBody(_Named):
    verbose: bool | None = None


class CopyBody(_Body):
    source: str = Field(min_length=1, pattern=MODEL_NAME)
    destination: str = Field(min_length=1, pattern=MODEL_NAME)
