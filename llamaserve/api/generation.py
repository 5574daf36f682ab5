"""What chat and text completions share: request fields → engine request, opening a
generation on a resident model, and Server-Sent Events framing."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from contextvars import ContextVar
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import StreamingResponse

from .. import __version__
from ..engine import Event, GenerationRequest, SamplingParams
from ..manager import ModelManager, ModelNotFoundError, ModelUnavailableError, ResidentModel
from ..settings import parse_duration
from .errors import APIError, parse_json, validation_error
from .schemas import _Sampling

SYSTEM_FINGERPRINT = f"fp_llamaserve_{__version__}"
RequestT = TypeVar("RequestT", bound=BaseModel)
# The request's `keep_alive` (Ollama's field), from parse_request to open_generation: both run
# in the request's own task.
KEEP_ALIVE: ContextVar[float | None] = ContextVar("keep_alive", default=None)


def parse_keep_alive(body: dict[str, Any]) -> float | None:
    value = body.get("keep_alive")
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise APIError(400, str(exc), param="keep_alive", code="invalid_value") from exc


async def parse_request(request: Request, schema: type[RequestT]) -> RequestT:
    body = parse_json(await request.body())
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.", code="invalid_json")
    KEEP_ALIVE.set(parse_keep_alive(body))
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def reject_unsupported(fields: dict[str, Any]) -> None:
    """400 for request fields this server does not honour yet, rather than ignoring them."""
    for name, value in fields.items():
        if value:
            raise APIError(
                400,
                f"'{name}' is not supported by this server yet; leave it out of the request.",
                param=name,
                code="unsupported_parameter",
            )


def sampling_params(body: _Sampling, model: ResidentModel) -> SamplingParams:
    """Request fields, else the catalog's defaults for the model, else OpenAI's defaults."""
    defaults = model.spec.defaults
    base = SamplingParams()

    def pick(name: str) -> Any:
        value = getattr(body, name)
        if value is None:
            value = getattr(defaults, name, None)
        return getattr(base, name) if value is None else value

    return SamplingParams(
        temperature=pick("temperature"),
        top_p=pick("top_p"),
        top_k=pick("top_k"),
        min_p=pick("min_p"),
        repeat_penalty=pick("repeat_penalty"),
        frequency_penalty=pick("frequency_penalty"),
        presence_penalty=pick("presence_penalty"),
        seed=body.seed,
    )


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


async def open_generation(
    manager: ModelManager, model_name: str, build: Any
) -> tuple[ResidentModel, AsyncIterator[Event]]:
    """Borrow the model and start generating; errors that come before the first event (an
    unknown model, a prompt too long) are raised here, before any response is sent.

    `build(model) -> GenerationRequest` makes the engine request once the model is known.
    The returned iterator holds the model until it is exhausted or closed.
    """
    stack = AsyncExitStack()
    try:
        model = await stack.enter_async_context(manager.use(model_name, KEEP_ALIVE.get()))
    except ModelNotFoundError as exc:
        raise APIError(404, str(exc), param="model", code="model_not_found") from exc
    except ModelUnavailableError as exc:
        raise APIError(exc.status, str(exc), param="model", code=exc.code) from exc
    try:
        request: GenerationRequest = build(model)
        assert model.engine is not None
        events = model.engine.generate(request)
        first = await anext(events)
    except BaseException:
        await stack.aclose()
        raise

    async def held() -> AsyncIterator[Event]:
        try:
            yield first
            async for event in events:
                yield event
        finally:
            await events.aclose()
            await stack.aclose()

    return model, held()


def sse_response(chunks: AsyncIterator[BaseModel | dict[str, Any]]) -> StreamingResponse:
    """Server-Sent Events: one `data:` frame per chunk (a model, or an in-band error body),
    then `data: [DONE]`."""

    async def frames() -> AsyncIterator[bytes]:
        async for chunk in chunks:
            if isinstance(chunk, BaseModel):
                payload = chunk.model_dump_json(exclude_unset=True)
            else:
                payload = json.dumps(chunk)
            yield f"data: {payload}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
