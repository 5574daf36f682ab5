"""POST /v1/embeddings."""

from __future__ import annotations

import base64

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...engine.embedding import EmbeddingInput
from ...models.manager import ModelManager
from .embedding_schemas import CreateEmbeddingResponse, Embedding, EmbeddingRequest, EmbeddingUsage
from .http import parse_request


def inputs_of(body: EmbeddingRequest) -> list[EmbeddingInput]:
    """The four input forms (a string, strings, token ids, lists of token ids) as a list of
    inputs, one embedding each."""
    value = body.input
    if isinstance(value, str) or isinstance(value[0], int):
        return [value]  # type: ignore[list-item]
    return list(value)  # type: ignore[arg-type]


def encode(vector: np.ndarray, encoding_format: str | None) -> list[float] | str:
    if encoding_format == "base64":
        # What the OpenAI clients decode: the raw little-endian float32 bytes.
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


async def create_embedding(request: Request) -> Response:
    body = await parse_request(request, EmbeddingRequest)
    manager: ModelManager = request.app.state.manager
    async with manager.use(body.model, embeddings=True) as model:
        assert model.embedder is not None
        result = await model.embedder.embed(inputs_of(body), body.dimensions)
    response = CreateEmbeddingResponse(
        data=[
            Embedding(index=index, embedding=encode(vector, body.encoding_format))
            for index, vector in enumerate(result.vectors)
        ],
        model=body.model,
        usage=EmbeddingUsage(
            prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens
        ),
    )
    return JSONResponse(response.model_dump())
