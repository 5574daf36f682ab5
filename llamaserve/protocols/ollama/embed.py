"""POST /api/embed and the legacy POST /api/embeddings, through the model's embedder (an
embedding model's context, or a chat model's second, mean-pooled one). Vectors are unit
length on both routes (Ollama's legacy route returns them unnormalised)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...engine.embedding import Embeddings
from .errors import ollama_errors
from .http import keep_alive_seconds, manager_of, nanoseconds, parse_body
from .names import resolve
from .schemas import EmbedBody, EmbeddingsBody


async def _embed(request: Request, name: str, keep_alive: float | None, inputs: list[str],
                 dimensions: int | None, truncate: bool) -> tuple[Embeddings | None, float]:
    """The vectors (None for no input: the model is only loaded) and the seconds spent
    waiting for the model."""
    manager = manager_of(request)
    model = await resolve(manager, name)
    asked = time.monotonic()
    async with manager.use(model.spec.id, keep_alive, embeddings=True) as resident:
        loaded = time.monotonic() - asked
        if not inputs:
            return None, loaded
        assert resident.embedder is not None
        return await resident.embedder.embed(inputs, dimensions, truncate=truncate), loaded


@ollama_errors
async def embed(request: Request) -> Response:
    started = time.monotonic()
    body = await parse_body(request, EmbedBody)
    inputs = [body.input] if isinstance(body.input, str) else list(body.input)
    inputs = [] if inputs == [""] else inputs  # "" loads the model, as in Ollama
    result, load_seconds = await _embed(request, body.model, keep_alive_seconds(body.keep_alive),
                                        inputs, body.dimensions, body.truncate is not False)
    return JSONResponse({
        "model": body.model,
        "embeddings": result.vectors.tolist() if result is not None else [],
        "total_duration": nanoseconds(time.monotonic() - started),
        "load_duration": nanoseconds(load_seconds),
        "prompt_eval_count": result.prompt_tokens if result is not None else 0,
    })


@ollama_errors
async def embeddings(request: Request) -> Response:
    body = await parse_body(request, EmbeddingsBody)
    inputs = [body.prompt] if body.prompt else []
    result, _ = await _embed(request, body.model, keep_alive_seconds(body.keep_alive), inputs,
                             None, True)
    return JSONResponse({"embedding": result.vectors[0].tolist() if result is not None else []})
