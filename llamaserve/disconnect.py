"""Stopping a request's work when its client goes away.

A streamed answer notices a closed connection when it next writes; a non-streamed one (a chat
answer, a batch of embeddings) writes only at the end, so without this it would generate for
minutes for nobody while holding its sequences. Once a POST body has been read, this
middleware keeps reading the ASGI receive channel: an `http.disconnect` before the response is
complete cancels the handler, which stops its generations the way a closed stream does (the
engine frees their sequences at its next step). One place for every route and protocol.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)


class DisconnectMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        watch = _Watch(receive)

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                watch.complete = True
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, watch.receive, tracking_send))
        watcher = asyncio.create_task(watch.run(handler))
        try:
            await handler
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not watch.gone.is_set() or (current is not None and current.cancelling()):
                raise  # cancelled from outside (shutdown): not ours to swallow
            scope.setdefault("state", {})["client_gone"] = True
            logger.info("%s %s: the client disconnected; its request was cancelled",
                        scope["method"], scope["path"])
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


class _Watch:
    """The receive channel, read by the handler until its body is complete, then by `run`."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.body_read = asyncio.Event()
        self.gone = asyncio.Event()
        self.complete = False

    async def receive(self) -> Message:
        if self.body_read.is_set():  # the handler listens for a disconnect (streams do)
            await self.gone.wait()
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.gone.set()
        elif not message.get("more_body"):
            self.body_read.set()
        return message

    async def run(self, handler: asyncio.Future[Any]) -> None:
        await self.body_read.wait()
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if self.complete or handler.done():
            return  # the answer was sent: the connection merely closed (or is kept alive)
        self.gone.set()
        handler.cancel()
