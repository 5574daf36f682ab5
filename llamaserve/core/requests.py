"""Protocol-neutral requests: what every wire format is translated into.

Field names here are llamaserve's own. A protocol fills them from its body and names, in the
`param` fields, where each piece came from in its own spelling, so that errors about them
point at the client's field (`messages[0].content[1]`, `tools[2].function.parameters`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Image:
    """An image in a message: a `data:` URI or an http(s) URL, fetched before the model runs."""

    url: str
    param: str  # e.g. messages[0].content[1]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text of an object


@dataclass
class Message:
    role: Literal["system", "user", "assistant", "tool"]
    content: list[str | Image] = field(default_factory=list)  # text pieces and images, in order
    name: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    # OpenAI's legacy `function_call` on an assistant message, given to templates as is
    function_call: dict[str, Any] | None = None
    reasoning: str | None = None  # an assistant's earlier thinking (reasoning_content)


@dataclass(frozen=True)
class Tool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema of the arguments object
    param: str = "tools"  # where its parameters are, e.g. tools[0].function.parameters

    def definition(self) -> dict[str, Any]:
        """The OpenAI-style definition chat templates expect."""
        function: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            function["description"] = self.description
        if self.parameters is not None:
            function["parameters"] = self.parameters
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolChoice:
    """`auto`: the model may call a tool; `none`: it may not; `required`: it must call one;
    `named`: it must call `name`. `param` is the request field, for errors."""

    mode: Literal["auto", "none", "required", "named"] = "auto"
    name: str | None = None
    param: str = "tool_choice"


@dataclass(frozen=True)
class ResponseFormat:
    """`json_object`: any JSON object; `json_schema`: JSON valid against `schema`."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: dict[str, Any] | None = None
    param: str = "response_format"


@dataclass
class Sampling:
    """Sampling fields as the client sent them; None: the catalog's default for the model,
    else the engine's."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repeat_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    mirostat_mode: int | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    logit_bias: dict[str, float] | None = None  # token id (as text) → bias


@dataclass(frozen=True)
class ContextSize:
    """The context a client needs the model to hold (Ollama's `options.num_ctx`): more than
    the model was loaded with is refused before generating, never silently truncated."""

    tokens: int
    param: str = "num_ctx"


@dataclass
class GenerationOptions:
    """What chat and text completions share."""

    model: str
    sampling: Sampling = field(default_factory=Sampling)
    max_tokens: int | None = None  # None: the catalog's default, else up to the context
    stop: list[str] = field(default_factory=list)
    n: int = 1
    grammar: str | None = None  # GBNF (a llama.cpp extension)
    cache_prompt: bool = True
    keep_alive: float | None = None  # seconds (Ollama); None: the model's
    fit_context: bool = False  # max_tokens past the context's room: stop when it is full
    context: ContextSize | None = None  # None: whatever the model was loaded with


@dataclass
class ChatRequest(GenerationOptions):
    messages: list[Message] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None  # None: auto with tools, none without
    response_format: ResponseFormat | None = None
    logprobs: int | None = None  # None: off; k: the chosen token's logprob and the top k
    # False: ask the template not to think (its `enable_thinking` switch); None: the model's way
    thinking: bool | None = None
    # True: a thinking model's reasoning comes apart (ChoiceDelta.reasoning), for protocols
    # that have a place for it; False: it stays in the content, as the model wrote it.
    separate_reasoning: bool = False


@dataclass
class CompletionRequest(GenerationOptions):
    prompts: list[str | list[int]] = field(default_factory=list)  # each with its own choices
    suffix: str | None = None
    best_of: int | None = None  # candidates per prompt, the n best kept (by mean logprob)
    echo: bool = False
    logprobs: int | None = None
