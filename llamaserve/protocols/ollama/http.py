"""What the /api routes share at the HTTP edge: parsing a body into its schema, keep-alive
durations, timestamps and nanosecond durations as Ollama writes them, and NDJSON framing."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import StreamingResponse

from ...core.run import Runtime
from ...errors import RequestError
from ...models.manager import ModelManager
from ...settings import parse_duration
from .errors import parse_json, validation_error

BodyT = TypeVar("BodyT", bound=BaseModel)


async def parse_body(request: Request, schema: type[BodyT]) -> BodyT:
    body = parse_json(await request.body())
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc


def keep_alive_seconds(value: float | str | None) -> float | None:
    """Ollama's `keep_alive`: seconds or a duration ("5m", "1h30m"); 0 unloads when the
    request is done, a negative value keeps the model loaded; None: the model's own."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise RequestError(400, f"invalid 'keep_alive': {exc}", param="keep_alive") from exc


def manager_of(request: Request) -> ModelManager:
    return request.app.state.manager  # type: ignore[no-any-return]


def copied_names(request: Request) -> set[str]:
    """Names given by /api/copy: listed by /api/tags beside the models' ids (the catalog's
    aliases, such as gpt-3.5-turbo, work in requests but are not listed)."""
    state = request.app.state
    if not hasattr(state, "ollama_copies"):
        state.ollama_copies = set()
    return state.ollama_copies  # type: ignore[no-any-return]


def runtime(request: Request) -> Runtime:
    state = request.app.state
    return Runtime(state.manager, state.settings, state.metrics,
                   request.scope.setdefault("state", {}))


def timestamp(seconds: float | None = None) -> str:
    """RFC 3339 in UTC with a fraction, as Ollama's `created_at` and `modified_at`."""
    at = time.time() if seconds is None else seconds
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}Z"


def nanoseconds(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


def ndjson_response(lines: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    """One JSON object per line, as Ollama streams (`application/x-ndjson`)."""

    async def encoded() -> AsyncIterator[bytes]:
        async for line in lines:
            yield (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    return StreamingResponse(encoded(), media_type="application/x-ndjson",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
