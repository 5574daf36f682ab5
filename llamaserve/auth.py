"""API keys: `Authorization: Bearer KEY` (or Anthropic's `x-api-key: KEY`) on every route but
/health when keys are configured."""

from __future__ import annotations

import hmac

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .protocols.anthropic import errors as anthropic_errors
from .protocols.openai.errors import error_body

# the playground page is static; its API calls carry the key the user types into it
OPEN_PATHS = {"/health", "/"}


class APIKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]

    def _accepted(self, header: bytes | None, api_key: bytes | None = None) -> bool:
        offered = [api_key.strip()] if api_key is not None else []  # Anthropic's clients
        if header is not None and header.lower().startswith(b"bearer "):
            offered.append(header[len(b"bearer ") :].strip())
        # compare with every key, always, so the time taken says nothing about which matched
        matches = [hmac.compare_digest(key_offered, key)
                   for key_offered in offered for key in self.keys]
        return any(matches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.keys
            or scope["path"] in OPEN_PATHS
            or scope["method"] == "OPTIONS"  # CORS preflights carry no credentials
            or self._accepted(dict(scope["headers"]).get(b"authorization"),
                              dict(scope["headers"]).get(b"x-api-key"))
        ):
            await self.app(scope, receive, send)
            return
        message = ("Incorrect or missing API key. Send it as 'Authorization: Bearer KEY' or "
                   "'x-api-key: KEY' (the server was started with --api-key).")
        body = error_body(401, message, None, "invalid_api_key")
        body["error"]["type"] = "invalid_request_error"  # what OpenAI answers for a bad key
        if anthropic_errors.owns(scope["path"]):
            body = anthropic_errors.error_body(401, message)
        response = JSONResponse(body, status_code=401,
                                headers={"WWW-Authenticate": 'Bearer realm="llamaserve"'})
        await response(scope, receive, send)
