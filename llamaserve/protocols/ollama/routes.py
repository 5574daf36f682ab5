"""Every route of Ollama's API, for server.py to mount. Other paths under /api/ answer
Ollama's 404 (or 405 for a known path and another method) in its error shape."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .chat import chat
from .embed import embed, embeddings
from .errors import error_response
from .generate import generate
from .manage import copy_model, delete_model, not_implemented, pull_model
from .models import Endpoint, list_tags, root, show, version
from .ps import list_running

API = [
    ("/api/chat", chat, ["POST"]),
    ("/api/generate", generate, ["POST"]),
    ("/api/embed", embed, ["POST"]),
    ("/api/embeddings", embeddings, ["POST"]),
    ("/api/tags", list_tags, ["GET"]),
    ("/api/show", show, ["POST"]),
    ("/api/ps", list_running, ["GET"]),
    ("/api/version", version, ["GET"]),
    ("/api/pull", pull_model, ["POST"]),
    ("/api/delete", delete_model, ["DELETE"]),
    ("/api/copy", copy_model, ["POST"]),
    ("/api/create", not_implemented, ["POST"]),
    ("/api/push", not_implemented, ["POST"]),
    ("/api/blobs/{digest}", not_implemented, ["HEAD", "POST"]),
]
_METHODS = {path: methods for path, _, methods in API}


async def unknown(request: Request) -> Response:
    path = request.url.path
    allowed = _METHODS.get(path)
    if allowed is not None:
        return error_response(405, f"method {request.method} not allowed on {path}: use "
                              f"{' or '.join(allowed)}", {"Allow": ", ".join(allowed)})
    return error_response(404, f"{request.url.path} is not a route of Ollama's API")


def ollama_routes(playground: Endpoint | None) -> list[Route]:
    """The /api routes, the catch-all after them, and `/` (the playground for browsers,
    Ollama's "is it running" probe for the rest)."""
    routes = [Route(path, endpoint, methods=methods) for path, endpoint, methods in API]
    routes.append(Route("/api/{path:path}", unknown,
                        methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]))
    routes.append(Route("/", root(playground), methods=["GET", "HEAD"]))
    return routes
