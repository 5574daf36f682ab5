"""What the OpenAI routes share at the HTTP edge: parsing a body into its schema, the
server-side context a request runs with, ids, and Server-Sent Events framing."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import fields
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import StreamingResponse

from ... import __version__
from ...core.requests import Sampling
from ...core.run import Runtime, Usage
from ...errors import RequestError
from ...settings import parse_duration
from .errors import parse_json, validation_error
from .schemas import PromptTokensDetails, _Sampling
from .schemas import Usage as WireUsage

SYSTEM_FINGERPRINT = f"fp_llamaserve_{__version__}"
RequestT = TypeVar("RequestT", bound=BaseModel)


def parse_keep_alive(body: dict[str, Any]) -> float | None:
    value = body.get("keep_alive")
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise RequestError(400, f"Invalid value for 'keep_alive': {exc}", param="keep_alive",
                           code="invalid_value") from exc


async def parse_request(request: Request, schema: type[RequestT]) -> RequestT:
    body = parse_json(await request.body())
    if not isinstance(body, dict):
        raise RequestError(400, "The request body must be a JSON object.", code="invalid_json")
    # Ollama's `keep_alive` is accepted on the OpenAI routes too, as Ollama does
    request.scope.setdefault("state", {})["keep_alive"] = parse_keep_alive(body)
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc


def keep_alive_of(request: Request) -> float | None:
    return request.scope.get("state", {}).get("keep_alive")


def runtime(request: Request) -> Runtime:
    state = request.app.state
    return Runtime(state.manager, state.settings, state.metrics,
                   request.scope.setdefault("state", {}))


def sampling_of(body: _Sampling) -> Sampling:
    return Sampling(**{f.name: getattr(body, f.name, None) for f in fields(Sampling)})


def wire_usage(usage: Usage) -> WireUsage:
    return WireUsage(prompt_tokens=usage.prompt_tokens,
                     completion_tokens=usage.completion_tokens,
                     total_tokens=usage.total_tokens,
                     prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens))


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


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
