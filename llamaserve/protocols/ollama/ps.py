"""GET /api/ps: the models loaded now, their memory, offload and expiry (as Ollama's ps)."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...models.manager import ModelManager, ResidentModel


def ps_row(model: ResidentModel, expires_in: float | None) -> dict[str, Any]:
    """One loaded model: `expires_in` seconds from now it unloads (None: never, or busy)."""
    info, est = model.info, model.estimate
    gpu_layers = model.options.n_gpu_layers
    blocks = info.block_count if info else 0
    offloaded = blocks if gpu_layers < 0 else min(gpu_layers, blocks)
    share = offloaded / blocks if blocks else 0.0
    expires = None
    if expires_in is not None:
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + expires_in))
    return {
        "name": model.spec.id,
        "model": str(model.files.weights) if model.files else None,
        "size": model.footprint,
        "size_vram": int(model.footprint * share),
        "processor": f"{share:.0%} GPU" if share else "100% CPU",
        "gpu_layers": offloaded,
        "context_length": est.context if est else None,
        "expires_at": expires,
        "keep_alive": model.keep_alive,
        "in_flight": model.in_flight,
        "sequences": model.engine.sequences() if model.engine else None,
        "measured_rss": model.measured_bytes,
        "estimate": {"weights": est.weights, "kv_cache": est.kv_cache,
                     "compute": est.compute} if est else None,
        "details": {
            "family": info.architecture if info else None,
            "quantization_level": info.quantization if info else None,
            "parameter_count": info.n_params if info else None,
        },
    }


async def list_running(request: Request) -> Response:
    manager: ModelManager = request.app.state.manager
    limits = manager.limits
    return JSONResponse({
        "models": [ps_row(model, manager.expires_in(model)) for model in manager.by_recent_use()],
        "max_memory": limits.max_memory,
        "max_models": limits.max_models,
    })
