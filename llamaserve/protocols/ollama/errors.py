"""Ollama's error shape, `{"error": "message"}` with its status codes, for every error of the
/api routes: malformed bodies, validation, llamaserve.errors' table, and errors after a stream
started (one more NDJSON line, as Ollama sends them).

The app's exception handlers answer in OpenAI's shape, so each /api endpoint is wrapped with
`ollama_errors`, which answers before those handlers see anything.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ... import jsonbody
from ...errors import RequestError, is_known, request_error

logger = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


def error_response(status: int, message: str, headers: dict[str, str] | None = None
                   ) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def in_band_error(exc: Exception) -> dict[str, Any]:
    """The line that ends a stream whose 200 status was already sent."""
    return {"error": request_error(exc).message}


def ollama_errors(endpoint: Endpoint) -> Endpoint:
    """Answer every error of `endpoint` in Ollama's shape; a bug is logged and answered 500."""

    @functools.wraps(endpoint)
    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception as exc:
            if not is_known(exc):
                logger.exception("unhandled error on %s %s", request.method, request.url.path)
                return error_response(500, "llamaserve had an internal error serving this "
                                      "request; the server log has the details")
            error = request_error(exc)
            retry_after = getattr(exc, "retry_after", None)
            return error_response(error.status, error.message,
                                  {"Retry-After": str(retry_after)} if retry_after else None)

    return wrapped


def parse_json(raw: bytes) -> Any:
    try:
        return jsonbody.loads(raw)
    except jsonbody.BodyError as exc:
        raise RequestError(400, f"invalid JSON in the request body: {exc}") from exc


def field_path(loc: tuple[Any, ...]) -> str:
    """('messages', 0, 'images', 1) → 'messages[0].images[1]'; pydantic's names for the union
    member it tried (str, list[str], function-after[...]) are left out."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isidentifier() and part not in _UNION_TAGS:
            path += f".{part}" if path else part
    return path


_UNION_TAGS = {"str", "int", "float", "bool", "dict", "list", "none"}


def validation_error(exc: ValidationError) -> RequestError:
    first = exc.errors()[0]
    path = field_path(tuple(first["loc"]))
    if first["type"] == "missing":
        message = f"'{path}' is required"
    else:
        message = f"invalid '{path}': {first['msg']}" if path else first["msg"]
    return RequestError(400, message, param=path or None, code="invalid_value")
