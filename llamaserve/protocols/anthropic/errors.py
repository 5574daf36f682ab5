"""Anthropic's error shape, `{"type": "error", "error": {"type", "message"}}`, for every error
of the /v1/messages routes: malformed bodies, validation, and llamaserve.errors' table.

The app's exception handlers answer in OpenAI's shape, so these routes catch their own errors
(`anthropic_errors`); the API-key and body-size middlewares ask `owns(path)`.
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

PATH_PREFIX = "/v1/messages"

# Anthropic's statuses and their error types. llamaserve's 503s (busy, loading, out of
# memory) are Anthropic's 529 overloaded_error, which its clients retry with backoff.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_STATUSES = {503: 529}


def owns(path: str) -> bool:
    """Whether errors on `path` are answered in Anthropic's shape."""
    return path == PATH_PREFIX or path.startswith(PATH_PREFIX + "/")


def wire_status(status: int) -> int:
    return _STATUSES.get(status, status)


def error_body(status: int, message: str) -> dict[str, Any]:
    status = wire_status(status)
    error_type = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": error_type, "message": message}}


def error_response(exc: Exception) -> JSONResponse:
    """The answer to an exception of llamaserve.errors' table (or a RequestError)."""
    error = request_error(exc)
    response = JSONResponse(error_body(error.status, error.message),
                            status_code=wire_status(error.status))
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def in_band_error(exc: Exception) -> dict[str, Any]:
    """The `error` event for an error after a stream's 200 was sent."""
    if is_known(exc):
        error = request_error(exc)
        return error_body(error.status, error.message)
    logger.error("unhandled error in a /v1/messages stream", exc_info=exc)
    return error_body(500, "The server had an error while generating the reply.")


Handler = Callable[[Request], Awaitable[Response]]


def anthropic_errors(handler: Handler) -> Handler:
    """Answer every error of `handler` in Anthropic's shape (a bug: logged, 500 api_error)."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        # Read (and cache) the body first, outside: a body over the limit raises for the
        # body-limit middleware to answer, in this shape too (`owns`)
        await request.body()
        try:
            return await handler(request)
        except Exception as exc:
            if is_known(exc):
                return error_response(exc)
            logger.exception("unhandled error on %s %s", request.method, request.url.path)
            return JSONResponse(
                error_body(500, "The server had an error while processing your request."),
                status_code=500)

    return wrapped


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = jsonbody.loads(raw)
    except jsonbody.BodyError as exc:
        raise RequestError(400, f"The request body is not valid JSON: {exc}. Send a JSON "
                           "object with Content-Type: application/json.") from exc
    if not isinstance(body, dict):
        raise RequestError(400, "The request body must be a JSON object.")
    return body


# Names pydantic puts in an error's location that are not fields: the tag of a
# discriminated-union member and the name of a plain union member.
_TAGS = {"user", "assistant", "system", "text", "image", "tool_use", "tool_result", "thinking",
         "redacted_thinking", "base64", "url", "auto", "any", "tool", "none"}
_UNION_MEMBERS = {"str", "list", "dict", "int", "float", "bool"}
_TAGGED_FIELDS = {"source", "tool_choice"}  # fields holding a discriminated union


def field_path(loc: tuple[Any, ...]) -> str:
    """('messages', 0, 'user', 'content', 'list[...]', 1, 'image', 'source', 'base64',
    'media_type') → 'messages.0.content.1.source.media_type', Anthropic's spelling."""
    parts: list[str] = []
    previous: Any = None
    for part in loc:
        tagged = isinstance(previous, int) or previous in _TAGGED_FIELDS
        skip = isinstance(part, str) and (
            (tagged and part in _TAGS) or part in _UNION_MEMBERS or "[" in part
            or part[:1].isupper())
        if not skip:
            parts.append(str(part))
        previous = part
    return ".".join(parts)


def validation_error(exc: ValidationError) -> RequestError:
    """One problem, as Anthropic words them: `max_tokens: Field required`. The deepest one:
    for `content: str | list[...]`, a bad block inside the list says more than "not a str"."""
    errors = exc.errors()
    first = max(errors, key=lambda error: len(error["loc"]))
    path = field_path(tuple(first["loc"]))
    message = f"{path}: {first['msg']}" if path else str(first["msg"])
    if len(errors) > 1:
        message += f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return RequestError(400, message, param=path or None, code="invalid_value")
