"""OpenAI's error shape, `{"error": {"message", "type", "param", "code"}}`, for every error of
llamaserve.errors' table, malformed bodies and unknown routes."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from ... import jsonbody
from ...errors import ERRORS, RequestError, request_error

logger = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


def error_body(status: int, message: str, param: str | None, code: str | None) -> dict[str, Any]:
    error_type = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status)


def in_band_error(exc: Exception) -> dict[str, Any]:
    """The error body for an error that happens after a stream's 200 status was sent."""
    error = request_error(exc)
    return error_body(error.status, error.message, error.param, error.code)


def _field_path(loc: tuple[Any, ...]) -> str:
    """('messages', 0, 'user', 'content') → 'messages[0].content': pydantic's names for the
    union member or the tagged variant it tried are dropped."""
    path = ""
    previous: Any = None
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part[:1].isupper() or "[" in part or "-" in part:
            pass  # a union member's type name: HubSource, list[str], constrained-str
        elif isinstance(previous, int) and part in _ROLE_TAGS:
            pass  # the discriminator value of a list item (a message role, a part type)
        else:
            path += f".{part}" if path else str(part)
        previous = part
    return path


_ROLE_TAGS = {
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
    "text",
    "image_url",
    "refusal",
    "str",
    "list",
    "int",
    "float",
    "bool",
    "dict",
}


def validation_error(exc: ValidationError) -> RequestError:
    first = exc.errors()[0]
    param = _field_path(tuple(first["loc"])) or None
    detail = first["msg"]
    if first["type"] == "missing":
        message = f"Missing required parameter: '{param}'."
    else:
        message = f"Invalid value for '{param}': {detail}." if param else f"{detail}."
    extra = len(exc.errors()) - 1
    if extra:
        message += f" ({extra} more problem{'s' if extra > 1 else ''} in the request)"
    return RequestError(400, message, param=param, code="invalid_value")


def parse_json(raw: bytes) -> Any:
    try:
        return jsonbody.loads(raw)
    except jsonbody.BodyError as exc:
        raise RequestError(
            400,
            f"We could not parse the JSON body of your request: {exc}. "
            "Send a valid JSON object with Content-Type: application/json.",
            code="invalid_json",
        ) from exc


async def handle_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)
    return error_response(exc.status, exc.message, exc.param, exc.code)


async def handle_mapped(request: Request, exc: Exception) -> JSONResponse:
    """Any exception of the table; Retry-After for those that say when to retry."""
    error = request_error(exc)
    response = error_response(error.status, error.message, error.param, error.code)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


async def handle_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"Invalid URL ({request.method} {request.url.path}): no such route."
        path = request.url.path.rstrip("/")
        if any(route.path.rstrip("/") == "/v1" + path for route in request.app.routes
               if hasattr(route, "path")):
            message += (f" Did you mean /v1{path}? (An OpenAI client's base_url ends in /v1, "
                        "e.g. http://localhost:8000/v1.)")
        return error_response(404, message, code="unknown_url")
    if exc.status_code == 405:
        message = f"Method {request.method} is not allowed for {request.url.path}."
        response = error_response(405, message, code="method_not_allowed")
        if exc.headers:
            response.headers.update(exc.headers)
        return response
    return error_response(exc.status_code, str(exc.detail))


async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(
        500, "The server had an error while processing your request.", code="internal_error"
    )


EXCEPTION_HANDLERS = {
    RequestError: handle_api_error,
    **{cls: handle_mapped for cls in ERRORS},
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
