"""Running models: the engine seam between HTTP handlers and llama.cpp."""

from .serial import LoadOptions, SerialEngine
from .types import (
    EngineError,
    Event,
    Finished,
    GenerationRequest,
    PromptTooLongError,
    SamplingParams,
    TextDelta,
)

__all__ = [
    "EngineError",
    "Event",
    "Finished",
    "GenerationRequest",
    "LoadOptions",
    "PromptTooLongError",
    "SamplingParams",
    "SerialEngine",
    "TextDelta",
]
