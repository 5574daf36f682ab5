"""What handlers hand the engine, and what the engine hands back.

Nothing here knows HTTP or the OpenAI wire names: handlers translate both ways.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length"]


class EngineError(Exception):
    """A request the engine cannot run; the message is meant for the API client."""

    param: str | None = None

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class EngineBusyError(EngineError):
    """No sequence could take the request: the wait queue is full, the request waited too
    long, or the model is being unloaded. Worth retrying (503 with Retry-After)."""

    def __init__(self, message: str, code: str = "server_busy", retry_after: int = 1) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class EngineInternalError(EngineError):
    """The engine failed on its own side (llama.cpp refused a decode, an image would not
    evaluate): not the request's fault, so a 500 (code server_error), never a 4xx. The cause
    is logged where it happens; the message says what failed."""


class PromptTooLongError(EngineError):
    """The prompt (plus the requested completion) does not fit in the model's context."""


@dataclass
class SamplingParams:
    # OpenAI's defaults for temperature and top_p; llama.cpp's for the rest.
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 40
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    mirostat_mode: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    logit_bias: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageInput:
    """A decoded image: packed 8-bit RGB pixels, row by row."""

    width: int
    height: int
    rgb: bytes


@dataclass(frozen=True)
class JsonSchema:
    """Output that must be JSON valid against `schema`, enforced token by token
    (engine/constraint.py). `param` is the request field it came from, named in errors;
    `parts` maps JSON pointers inside `schema` to the fields they came from (a forced tool
    call's schema holds each tool's parameters), so an error names the tool at fault."""

    schema: dict[str, Any]
    param: str
    parts: tuple[tuple[str, str], ...] = ()


@dataclass
class GenerationRequest:
    """One generation: either chat `messages` (rendered with the model's template) or a raw
    `prompt` (text or token ids)."""

    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None  # given to the chat template
    template_options: dict[str, Any] = field(default_factory=dict)  # e.g. enable_thinking
    prompt: str | list[int] | None = None
    suffix: str | None = None  # fill-in-the-middle: generate what goes between prompt and suffix
    max_tokens: int | None = None  # None: until the model stops or the context is full
    stop: list[str] = field(default_factory=list)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    grammar: str | None = None  # GBNF the output must match
    json_schema: JsonSchema | None = None  # JSON the output must be (not with `grammar`)
    logprobs: int | None = None  # None: off; k: the chosen token's logprob and the top k
    echo: bool = False  # emit the prompt first (with its logprobs when asked)
    deadline: float | None = None  # time.monotonic() after which generation ends ("length")
    # One per MEDIA_MARKER in the messages' text, in order (engine/vision.py).
    images: list[ImageInput] = field(default_factory=list)
    cache_prompt: bool = True  # False: evaluate the whole prompt, reuse no cached cells
    # True: a max_tokens past the room the context leaves is not refused; generation ends when
    # the context is full (for clients that ask for a fixed large max_tokens whatever the model)
    fit_context: bool = False


@dataclass
class TokenLogprob:
    token: str
    bytes: bytes
    logprob: float | None  # None for the first prompt token, which has no context
    top: list[tuple[str, bytes, float]] = field(default_factory=list)


@dataclass
class TextDelta:
    text: str
    logprobs: list[TokenLogprob] | None = None
    echo: bool = False  # this is the prompt, echoed


@dataclass
class Finished:
    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    logprob_sum: float = 0.0  # of the generated tokens, when logprobs were asked for
    cached_tokens: int = 0  # prompt tokens taken from the prefix cache
    stop_sequence: str | None = None  # the request's stop string that ended it (not a template's)


Event = TextDelta | Finished
