"""The app factory: routes, middleware, lifespan and /health."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import APIKeyMiddleware
from .crosssite import CrossSiteMiddleware
from .disconnect import DisconnectMiddleware
from .models.manager import ModelManager
from .observability import AccessLogMiddleware, Metrics
from .protocols.anthropic import errors as anthropic_errors
from .protocols.anthropic.messages import count_tokens, create_message
from .protocols.llamacpp.rerank import rerank
from .protocols.llamacpp.tokenize import detokenize, tokenize
from .protocols.ollama.routes import ollama_routes
from .protocols.openai.chat import create_chat_completion
from .protocols.openai.completions import create_completion
from .protocols.openai.embeddings import create_embedding
from .protocols.openai.errors import EXCEPTION_HANDLERS, error_body
from .protocols.openai.models import list_models, retrieve_model
from .protocols.openai.response_store import open_store
from .protocols.openai.responses import (
    create_response,
    delete_response,
    list_input_items,
    retrieve_response,
)
from .settings import Settings
from .slowclients import BodyTimeoutMiddleware

logger = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 for request bodies over the limit: by Content-Length when given, else by counting
    the chunks as they arrive (chunked uploads)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"The request body is larger than this server accepts ({self.max_bytes} bytes)."
        body = (anthropic_errors.error_body(413, message) if anthropic_errors.owns(scope["path"])
                else error_body(413, message, None, "request_too_large"))
        response = JSONResponse(body, 413)
        await response(scope, receive, send)


async def health(request: Request) -> Response:
    manager: ModelManager = request.app.state.manager
    # Models may load on demand and unload when idle: being up is being ready.
    models = [{"id": m.spec.id, "loaded": m.loaded} for m in manager.models]
    return JSONResponse({"status": "ok", "models": models})


async def playground(request: Request) -> Response:
    page = resources.files("llamaserve").joinpath("static/playground.html").read_text("utf-8")
    return HTMLResponse(page)


async def metrics_text(request: Request) -> Response:
    text = request.app.state.metrics.render(request.app.state.manager.models)
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")


def _routes(settings: Settings) -> list[Route]:
    routes = []
    for path, endpoint, methods in [
        ("/v1/chat/completions", create_chat_completion, ["POST"]),
        ("/v1/completions", create_completion, ["POST"]),
        ("/v1/embeddings", create_embedding, ["POST"]),
        ("/v1/models", list_models, ["GET"]),
        ("/v1/models/{model:path}", retrieve_model, ["GET"]),
        ("/v1/messages", create_message, ["POST"]),
        ("/v1/messages/count_tokens", count_tokens, ["POST"]),
        ("/v1/responses", create_response, ["POST"]),
        ("/v1/responses/{response_id}", retrieve_response, ["GET"]),
        ("/v1/responses/{response_id}", delete_response, ["DELETE"]),
        ("/v1/responses/{response_id}/input_items", list_input_items, ["GET"]),
        # llama-server's own routes, with and without /v1 as it answers them
        *[(prefix + path, endpoint, ["POST"]) for prefix in ("", "/v1")
          for path, endpoint in [("/tokenize", tokenize), ("/detokenize", detokenize),
                                 ("/rerank", rerank), ("/reranking", rerank)]],
    ]:
        routes.append(Route(path, endpoint, methods=methods))
    routes.append(Route("/health", health, methods=["GET"]))
    routes.append(Route("/metrics", metrics_text, methods=["GET"]))
    # Ollama's API under /api, and `/`: the playground for browsers, Ollama's probe for others
    routes.extend(ollama_routes(playground if settings.playground else None))
    return with_trailing_slashes(routes)


def with_trailing_slashes(routes: list[Route]) -> list[Route]:
    """Each fixed path also with a trailing slash, right after it (before any catch-all): the
    seed clients use base_url=".../v1/", and both spellings answer without a redirect."""
    twinned = []
    for route in routes:
        twinned.append(route)
        if not route.path.endswith(("}", "/")):
            twinned.append(Route(route.path + "/", route.endpoint,
                                 methods=sorted(route.methods or []), name=route.name))
    return twinned


def create_app(manager: ModelManager, settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await manager.start()
        yield
        manager.close()
        app.state.response_store.close()

    app = Starlette(routes=_routes(settings), exception_handlers=EXCEPTION_HANDLERS,
                    lifespan=lifespan)
    app.router.redirect_slashes = False
    app.state.manager = manager
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.response_store = open_store(settings.state_dir, settings.max_stored_responses)
    # add_middleware wraps: the last added runs first. Order on the way in: access log (sees
    # every answer, 401 and 413 included), cross-site guard (Host, browsers' content types), CORS
    # (answers preflights), API key, body limit, body read timeout, disconnect (cancels a
    # handler whose client left).
    app.add_middleware(DisconnectMiddleware)
    app.add_middleware(BodyTimeoutMiddleware, timeout=settings.read_timeout)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(APIKeyMiddleware, keys=settings.keys())
    if settings.cors_origins:
        # Any header the page asks for: the origins are the operator's choice, and the SDKs
        # send their own (x-api-key, anthropic-version, x-stainless-*) beside Authorization
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                           allow_headers=["*"])
    app.add_middleware(CrossSiteMiddleware, bind_host=settings.host,
                       allowed_hosts=settings.allowed_hosts)
    app.add_middleware(AccessLogMiddleware, metrics=app.state.metrics)
    return app
