"""The /v1/embeddings request and answer, in the OpenAI reference's field order."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    StrictInt,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_core import PydanticCustomError

from .schemas import _Request

# ---------------------------------------------------------------------------- embeddings

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit on the items of one request
EmbeddingTokens = list[StrictInt]  # strict: true or 1.0 is not a token id


class EmbeddingRequest(_Request):
    """`openai/types/embedding_create_params.py`."""

    input: str | list[str] | EmbeddingTokens | list[EmbeddingTokens]
    model: str
    dimensions: int | None = Field(default=None, ge=1)
    encoding_format: Literal["float", "base64"] | None = "float"
    user: str | None = None

    @field_validator("input", mode="wrap")
    @classmethod
    def _input_form(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            value = handler(value)
        except ValidationError:
            # One message for the four forms, not one per union member pydantic tried.
            raise PydanticCustomError(
                "input_type",
                "expected a string, a list of strings, a list of token ids (integers) or a "
                "list of lists of token ids",
            ) from None
        if not value:  # "" or []
            raise PydanticCustomError("empty", "it must not be empty")
        if isinstance(value, list) and not isinstance(value[0], int):
            if len(value) > MAX_EMBEDDING_INPUTS:
                raise PydanticCustomError(
                    "too_long",
                    "at most {limit} inputs per request, got {count}",
                    {"limit": MAX_EMBEDDING_INPUTS, "count": len(value)},
                )
            for index, item in enumerate(value):
                if not item:
                    raise PydanticCustomError(
                        "empty", "input[{index}] must not be empty", {"index": index}
                    )
        return value


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    # A list of floats, or with encoding_format "base64" their little-endian float32 bytes.
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(BaseModel):
    """`openai/types/create_embedding_response.py`."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
