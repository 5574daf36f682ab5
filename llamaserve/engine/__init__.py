"""Running models: the engine seam between HTTP handlers and llama.cpp."""

from .options import LoadOptions
from .scheduler import BatchEngine
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

__all__ = [
    "BatchEngine",
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
