"""Bounds on how long a client may take to send a request: its headers (a connection that
sends half a request line and waits), and each pause while it sends the body.

uvicorn closes idle keep-alive connections (`timeout_keep_alive`) but has no header timeout:
any byte received cancels its keep-alive timer, so connections that trickle or stall pile up
until file descriptors run out.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from .crosssite import error_response


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers have not all
    arrived `header_timeout` seconds after it opened or after its previous response."""

    header_timeout = 30.0  # set by `with_header_timeout`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's headers are complete
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None
                                                or self.cycle.response_complete):
            self._arm()  # the next request on this connection gets the same bound

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing() and (self.cycle is None
                                                or self.cycle.response_complete):
            self.transport.close()


def with_header_timeout(seconds: float) -> type[HeaderTimeoutProtocol]:
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": seconds})


class BodyTimeoutMiddleware:
    """408 when a client pauses longer than `timeout` seconds while sending a request body.
    The body is read here, then handed on as it came."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", []))
        if scope["type"] != "http" or not (b"content-length" in headers
                                           or b"transfer-encoding" in headers):
            await self.app(scope, receive, send)
            return
        received: list[Message] = []
        while not received or (received[-1]["type"] == "http.request"
                                and received[-1].get("more_body", False)):
            try:
                received.append(await asyncio.wait_for(receive(), self.timeout))
            except asyncio.TimeoutError:
                message = (f"The request body stopped arriving for {self.timeout:g} s; send it "
                           "without pauses.")
                response = error_response(scope["path"], 408, message, "request_timeout")
                response.headers["Connection"] = "close"
                await response(scope, receive, send)
                return

        async def replay() -> Message:
            return received.pop(0) if received else await receive()

        await self.app(scope, replay, send)
