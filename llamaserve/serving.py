"""Running the app under uvicorn: signals, a graceful shutdown whose cut streams still end
well-formed, and the bounds on slow clients.

On SIGINT, SIGTERM or SIGHUP uvicorn stops accepting, lets running requests go on for the grace
period, then cancels them: a cancelled stream used to stop mid-answer (no finish_reason, no
[DONE]) with "Exception in ASGI application" in the log. Here, when the grace period is over,
the engines end their running requests as "length" instead, and each protocol writes its own
last frames; uvicorn cancels only what is still running a few seconds later.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from collections.abc import Generator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

from .models.manager import ModelManager
from .settings import Settings
from .slowclients import with_header_timeout

# SIGHUP (a closed terminal, `kill -HUP`) stops the server as SIGTERM does, not at once
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, *((signal.SIGHUP,) if hasattr(signal, "SIGHUP")
                                                 else ()))
# Time the streams ended by the shutdown get to write their last frames
FINAL_FRAMES_SECONDS = 5.0
KEEP_ALIVE_SECONDS = 5  # an idle connection between requests (uvicorn's default)


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, manager: ModelManager, grace: float) -> None:
        super().__init__(config)
        self.manager = manager
        self.grace = grace

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """uvicorn's, with SIGHUP, and without raising the signal again afterwards: the
        caller frees the models and exits 0."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        timer = asyncio.get_running_loop().call_later(self.grace, self.manager.wind_down)
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()


def serve(app: ASGIApp, manager: ModelManager, settings: Settings) -> None:
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info" if settings.verbose else "warning",
        access_log=False,  # ours (llamaserve.access) carries the model and token counts
        http=with_header_timeout(settings.read_timeout),
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=settings.shutdown_grace + FINAL_FRAMES_SECONDS,
    )
    GracefulServer(config, manager, settings.shutdown_grace).run()
