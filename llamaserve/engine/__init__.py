"""Running models: the engine seam between HTTP handlers and llama.cpp."""

from .options import LoadOptions
from .scheduler import BatchEngine
from .template import ChatTemplateError, defer_llama_templates
from .types import (
    EngineBusyError,
    EngineError,
    EngineInternalError,
    Event,
    Finished,
    GenerationRequest,
    PromptTooLongError,
    SamplingParams,
    TextDelta,
)

# Before any Llama() is built: llama-cpp-python would compile every GGUF template unlimited.
defer_llama_templates()

__all__ = [
    "BatchEngine",
    "ChatTemplateError",
    "EngineBusyError",
    "EngineError",
    "EngineInternalError",
    "Event",
    "Finished",
    "GenerationRequest",
    "LoadOptions",
    "PromptTooLongError",
    "SamplingParams",
    "TextDelta",
]
