"""GET /api/ps: the models loaded now, their memory, offload and expiry (as Ollama's ps)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..manager import ModelManager


async def list_running(request: Request) -> Response:
    manager: ModelManager = request.app.state.manager
    limits = manager.limits
    return JSONResponse({
        "models": manager.status(),
        "max_memory": limits.max_memory,
        "max_models": limits.max_models,
    })
