"""API keys: `Authorization: Bearer KEY` on every route but /health when keys are configured."""

from __future__ import annotations

import hmac

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .protocols.openai.errors import error_body

# the playground page is static; its API calls carry the key the user types into it
OPEN_PATHS = {"/health", "/"}


class APIKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]

    def _accepted(self, header: bytes | None) -> bool:
        if header is None or not header.lower().startswith(b"bearer "):
            return False
        offered = header[len(b"bearer ") :].strip()
        # compare with every key, always, so the time taken says nothing about which matched
        matches = [hmac.compare_digest(offered, key) for key in self.keys]
        return any(matches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.keys
            or scope["path"] in OPEN_PATHS
            or scope["method"] == "OPTIONS"  # CORS preflights carry no credentials
            or self._accepted(dict(scope["headers"]).get(b"authorization"))
        ):
            await self.app(scope, receive, send)
            return
        message = ("Incorrect or missing API key. Send it as 'Authorization: Bearer KEY' "
                   "(the server was started with --api-key).")
        body = error_body(401, message, None, "invalid_api_key")
        body["error"]["type"] = "invalid_request_error"  # what OpenAI answers for a bad key
        response = JSONResponse(body, status_code=401,
                                headers={"WWW-Authenticate": 'Bearer realm="llamaserve"'})
        await response(scope, receive, send)
